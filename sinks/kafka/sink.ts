import { CompressionTypes, Kafka, logLevel, Partitioners, type Admin, type LogEntry, type Producer, type SASLOptions } from 'kafkajs';
import type { ConnectionOptions } from 'node:tls';
import {
  bounded,
  createLink,
  errorMessage,
  FatalError,
  OK,
  RetriableError,
  SidekickError,
  type Envelope,
  type ItemOutcome,
  type Logger,
  type SendResult,
  type Sink,
} from '../../src/sink-kit.js';
import { classifyKafkaError, rootKafkaError, TOO_LARGE_TYPES } from './errors.js';
import { createMessageBuilder, templateFields, type KafkaFormat, type KafkaRecord } from './message.js';

export interface KafkaSinkOptions {
  readonly brokers: readonly string[];
  readonly clientId: string;
  readonly topic: string;
  readonly key: string | null;
  readonly format: KafkaFormat;
  readonly cloudevents?: { readonly mode: 'binary' | 'structured'; readonly source: string; readonly type?: string | undefined } | undefined;
  readonly acks: -1 | 0 | 1;
  readonly compression: 'none' | 'gzip';
  readonly timeout: number;
  readonly connectionTimeout: number;
  readonly ssl?: boolean | Readonly<Record<string, unknown>> | undefined;
  readonly sasl?: Readonly<Record<string, unknown>> | undefined;
}

/**
 * Records of one produce request stay well under the broker's default `message.max.bytes`
 * (1 MiB, which applies to a partition's whole record batch): bigger groups are split.
 */
const MAX_REQUEST_BYTES = 512 * 1024;

/** kafkajs' log lines go to our logger (stderr JSON), not to its console logger. */
function logCreator(logger: Logger) {
  return () => (entry: LogEntry) => {
    const { message, ...rest } = entry.log;
    const fields = { kafkajs: entry.namespace, ...rest };
    if (entry.level <= logLevel.WARN) logger.warn(fields, `kafkajs: ${message}`);
    else if (entry.level === logLevel.INFO) logger.info(fields, `kafkajs: ${message}`);
    else logger.debug(fields, `kafkajs: ${message}`);
  };
}

function abortError(signal: AbortSignal): SidekickError {
  return new RetriableError('ABORTED', `send aborted: ${errorMessage(signal.reason ?? 'aborted')}`);
}

/** Rejects as soon as `signal` aborts; kafkajs requests cannot be cancelled, so the request itself runs on. */
function abortable<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  return bounded(promise, { signal, aborted: () => abortError(signal) });
}

/** Approximate encoded size (string lengths, not UTF-8 bytes): the too-large split below is the backstop. */
function recordBytes(r: KafkaRecord): number {
  let n = r.value.length + (r.key?.length ?? 0) + 70;
  for (const [k, v] of Object.entries(r.headers)) n += k.length + v.length + 4;
  return n;
}

export interface Group {
  readonly topic: string;
  readonly indexes: number[];
  readonly records: KafkaRecord[];
}

/**
 * Records grouped per topic (a topic's failure is attributed to its own records only), each topic's
 * cut into produce requests of at most `maxBytes`, in batch order. `undefined` entries (records that
 * could not be built) are skipped; `indexes` point back into the batch.
 */
export function groupRecords(records: readonly (KafkaRecord | undefined)[], maxBytes = MAX_REQUEST_BYTES): Group[][] {
  const byTopic = new Map<string, Group[]>();
  records.forEach((r, i) => {
    if (r === undefined) return;
    let groups = byTopic.get(r.topic);
    if (!groups) {
      groups = [{ topic: r.topic, indexes: [], records: [] }];
      byTopic.set(r.topic, groups);
    }
    let last = groups[groups.length - 1] as Group & { bytes?: number };
    const size = recordBytes(r);
    if (last.records.length > 0 && (last.bytes ?? 0) + size > maxBytes) {
      last = { topic: r.topic, indexes: [], records: [] };
      groups.push(last);
    }
    last.bytes = (last.bytes ?? 0) + size;
    last.indexes.push(i);
    last.records.push(r);
  });
  return [...byTopic.values()];
}

/** A connected producer and the admin client that checks topics: the sink's link (createLink). */
interface Connection {
  readonly producer: Producer;
  readonly admin: Admin;
}

/**
 * The Kafka sink. One kafkajs producer per sink, shared by the dispatcher's concurrent `send`
 * calls. kafkajs' own retrier is switched off (`retries: 0`): a failed produce comes back at once,
 * classified per topic, and the dispatcher's per-event backoff, sink-wide pause and dead-lettering
 * decide what happens next — two retry loops stacked would multiply delays and hide outages.
 *
 * Topics are checked once each with the admin client before the producer sees them: kafkajs asks
 * for the metadata of every topic a producer ever wrote to in one request, and a broker answering
 * "unknown topic" for one of them fails that request for all, so a missing topic handed to the
 * producer would fail — and dead-letter — events of healthy topics sent at the same moment.
 */
export function createKafkaSink(options: KafkaSinkOptions, context: { name: string; logger: Logger }): Sink {
  const { logger } = context;
  const build = createMessageBuilder(options);
  const topicIsConstant = templateFields(options.topic).length === 0;
  const kafka = new Kafka({
    clientId: options.clientId,
    brokers: [...options.brokers],
    connectionTimeout: options.connectionTimeout,
    requestTimeout: options.timeout,
    ...(options.ssl === undefined ? {} : { ssl: options.ssl as boolean | ConnectionOptions }),
    ...(options.sasl === undefined ? {} : { sasl: options.sasl as unknown as SASLOptions }),
    retry: { retries: 0 },
    logLevel: logLevel.WARN,
    logCreator: logCreator(logger),
  });
  const compression = options.compression === 'gzip' ? CompressionTypes.GZIP : CompressionTypes.None;
  const missing = (topic: string) =>
    new FatalError('KAFKA_TOPIC_MISSING', `topic "${topic}" does not exist; create it first (pg-sidekick never relies on topic auto-creation)`);

  let stopping: Promise<void> | undefined;
  const inFlight = new Set<Promise<unknown>>();
  /** Topics the brokers confirmed; a topic is checked once (concurrent checks share one request). */
  const knownTopics = new Set<string>();
  const checking = new Map<string, Promise<void>>();

  async function close(c: Connection): Promise<void> {
    await Promise.all([c.producer.disconnect(), c.admin.disconnect()]).catch((error: unknown) => {
      logger.warn({ err: errorMessage(error) }, 'kafka producer did not disconnect cleanly');
    });
  }

  async function connect(): Promise<Connection> {
    const producer = kafka.producer({
      // Never create topics by accident (on real Kafka; the test mock ignores this flag).
      allowAutoTopicCreation: false,
      // The Java client's partitioner: a key lands on the same partition as with any other producer.
      createPartitioner: Partitioners.DefaultPartitioner,
      retry: { retries: 0 },
      idempotent: false,
    });
    const admin = kafka.admin({ retry: { retries: 0 } });
    const c: Connection = { producer, admin };
    try {
      await Promise.all([producer.connect(), admin.connect()]);
    } catch (error) {
      await close(c);
      // Whatever stops us connecting (brokers down, bad credentials, TLS, a protocol the brokers
      // refuse) makes the destination unusable, not the events bad: back off, keep the attempts.
      const classified = classifyKafkaError(error);
      throw classified instanceof RetriableError && classified.unavailable
        ? classified
        : new RetriableError(classified.code, `cannot connect to the Kafka brokers (${options.brokers.join(', ')}): ${classified.message}`, {
            cause: error,
            unavailable: true,
          });
    }
    return c;
  }

  // Connected lazily (start, or the first send after a reset), one attempt at a time; a producer
  // kafkajs can no longer recover is retired, and closed once the requests still on it are done.
  const link = createLink<Connection>({
    connect,
    close,
    onRetire: (_c, why) => logger.warn({ err: why }, 'kafka producer reset; reconnecting on the next send'),
    closedError: () => new SidekickError('STOPPED', `kafka sink ${context.name} is stopped`),
    abortedError: abortError,
  });

  function checkTopic(c: Connection, topic: string): Promise<void> {
    if (knownTopics.has(topic)) return Promise.resolve();
    let pending = checking.get(topic);
    if (!pending) {
      pending = (async () => {
        try {
          // Metadata of this one topic, from the admin client, which never asks for auto-creation.
          const { topics } = await c.admin.fetchTopicMetadata({ topics: [topic] });
          if ((topics[0]?.partitions.length ?? 0) === 0) throw missing(topic);
          knownTopics.add(topic);
        } finally {
          checking.delete(topic);
        }
      })();
      checking.set(topic, pending);
    }
    return pending;
  }

  async function produce(c: Connection, group: Group): Promise<ItemOutcome[]> {
    try {
      await checkTopic(c, group.topic);
      await c.producer.sendBatch({
        topicMessages: [
          {
            topic: group.topic,
            messages: group.records.map(({ key, value, headers, timestamp }) =>
              timestamp === undefined ? { key, value, headers } : { key, value, headers, timestamp },
            ),
          },
        ],
        acks: options.acks,
        timeout: options.timeout,
        compression,
      });
      return group.records.map(() => OK);
    } catch (error) {
      const root = rootKafkaError(error);
      // A partition's record batch too large for the broker: halve until the culprit stands alone.
      if (root.type !== undefined && TOO_LARGE_TYPES.has(root.type) && group.records.length > 1) {
        const half = Math.ceil(group.records.length / 2);
        const parts = [0, half].map((from) => ({
          topic: group.topic,
          indexes: group.indexes.slice(from, from + half),
          records: group.records.slice(from, from + half),
        }));
        // One half after the other, so the records keep their batch order on the partition; if the
        // first half fails retriably, the second is not sent (it would overtake the first).
        const first = await produce(c, parts[0] as Group);
        const failed = first.find((o) => !o.ok && o.error.retriable);
        return [...first, ...(failed ? (parts[1] as Group).records.map(() => failed) : await produce(c, parts[1] as Group))];
      }
      let failure: SidekickError;
      if (root.type === 'UNKNOWN_TOPIC_OR_PARTITION' && knownTopics.has(group.topic)) {
        // A topic that existed is gone (deleted?), and kafkajs keeps asking for it with every other
        // topic: start over with a fresh producer and check the topic again before blaming it.
        knownTopics.delete(group.topic);
        link.retire(c, `topic "${group.topic}" disappeared`);
        failure = new RetriableError('KAFKA_TOPIC_VANISHED', `topic "${group.topic}" is no longer known to the brokers; checking it again`, {
          cause: error,
        });
      } else {
        if (root.name === 'KafkaJSError' && /producer is disconnected/i.test(root.message ?? '')) link.retire(c, root.message ?? '');
        failure = classifyKafkaError(error, group.topic);
      }
      return group.records.map(() => ({ ok: false, error: failure }));
    }
  }

  async function sendAll(batch: readonly Envelope[], signal: AbortSignal): Promise<SendResult> {
    const outcomes: ItemOutcome[] = new Array<ItemOutcome>(batch.length);
    const records = batch.map((e, i) => {
      try {
        return build(e);
      } catch (error) {
        outcomes[i] = {
          ok: false,
          error: error instanceof SidekickError ? error : new FatalError('KAFKA_RECORD', errorMessage(error), { cause: error }),
        };
        return undefined;
      }
    });
    const topics = groupRecords(records);
    if (topics.length === 0) return outcomes;
    // Not connected (never started, or reset after an error): connect now. Failing that, every
    // record fails with the connection error (retriable, `unavailable`).
    let c: Connection;
    try {
      c = await link.get(signal);
    } catch (error) {
      if (signal.aborted) throw error;
      const failure: ItemOutcome = { ok: false, error: classifyKafkaError(error) };
      for (const g of topics.flat()) for (const index of g.indexes) outcomes[index] = failure;
      return outcomes;
    }
    // use(): a producer retired meanwhile is closed only once these requests are done, even when
    // this send stops waiting for them (abort).
    await abortable(
      link.use(c, () =>
        Promise.all(
          topics.map(async (chunks) => {
            // A topic's requests go one after another (a key's run may span two of them), and after a
            // retriable failure the rest of that topic is not sent: nothing may overtake what failed.
            let failed: ItemOutcome | undefined;
            for (const g of chunks) {
              const results = failed ? g.records.map(() => failed as ItemOutcome) : await produce(c, g);
              g.indexes.forEach((index, j) => {
                outcomes[index] = results[j] as ItemOutcome;
              });
              failed ??= results.find((o) => !o.ok && o.error.retriable);
            }
          }),
        ),
      ),
      signal,
    );
    return outcomes;
  }

  return {
    name: context.name,
    type: 'kafka',
    // A produce request appends a partition's records in order, and a key has one partition: the
    // dispatcher may hand us several consecutive events of one key (a busy NOTIFY channel) at once.
    ordered: true,
    async start(signal) {
      if (stopping) throw new SidekickError('STOPPED', `kafka sink ${context.name} is stopped`);
      await link.get(signal);
    },
    send(batch, signal) {
      if (stopping) return Promise.reject(new SidekickError('STOPPED', `kafka sink ${context.name} is stopped`));
      const work = sendAll(batch, signal);
      inFlight.add(work);
      void work.finally(() => inFlight.delete(work)).catch(() => {});
      return work;
    },
    stop() {
      stopping ??= (async () => {
        // Let produce requests already on the wire finish (each is bounded by `timeout`).
        await Promise.allSettled([...inFlight]);
        await link.close();
      })();
      return stopping;
    },
    async check(signal) {
      const admin = kafka.admin({ retry: { retries: 0 } });
      try {
        await abortable(admin.connect(), signal);
        let topicLine = `topics from template "${options.topic}" must exist`;
        if (topicIsConstant) {
          // Metadata of the one topic (the admin client never asks for auto-creation), not a listing of all.
          const { topics } = await abortable(admin.fetchTopicMetadata({ topics: [options.topic] }), signal);
          const partitions = topics[0]?.partitions.length ?? 0;
          if (partitions === 0) throw missing(options.topic);
          topicLine = `topic "${options.topic}" exists (${partitions} partition${partitions === 1 ? '' : 's'})`;
        }
        const cluster = await abortable(admin.describeCluster(), signal);
        return `${cluster.brokers.length} broker(s) (${options.brokers.join(', ')}); ${topicLine}`;
      } catch (error) {
        if (error instanceof SidekickError) throw error;
        const topicError = rootKafkaError(error).type === 'UNKNOWN_TOPIC_OR_PARTITION' && topicIsConstant;
        throw classifyKafkaError(error, topicError ? options.topic : undefined);
      } finally {
        await admin.disconnect().catch(() => {});
      }
    },
  };
}
