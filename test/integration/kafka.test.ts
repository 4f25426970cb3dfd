import { randomBytes } from 'node:crypto';
import net from 'node:net';
import kafkajs, { Kafka, logLevel, type Admin } from 'kafkajs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { sinkDefinitions } from '../../sinks/index.js';
import { kafkaSink } from '../../sinks/kafka/index.js';
import { createBridge } from '../../src/bridge.js';
import { parseConfig, type DispatchOptions } from '../../src/config.js';
import { createDispatcher } from '../../src/dispatcher/index.js';
import { envelopeJson, type Envelope } from '../../src/envelope.js';
import { RetriableError } from '../../src/errors.js';
import type { ItemOutcome, Sink } from '../../src/sink.js';
import { contractContext, quietLogger, sinkContract, testEnvelope } from '../contract/sink-contract.js';
import { createTestDatabase, waitFor } from '../support/db.js';
import { createKafkaTopic, kafkaMockCommand as kafkaControl, serviceEnv } from '../support/services.js';

/*
 * Every test here runs against librdkafka's mock cluster: an in-memory broker that speaks the Kafka
 * wire protocol (no Apache Kafka can be installed on these machines). It is not a real Kafka: it
 * auto-creates any topic a metadata request names (so a "missing" topic is simulated through its
 * control port), has no idempotent producer or transactions, and keeps everything in memory —
 * at most 5 MiB per partition (older record batches are dropped), so every test stays far below.
 * The tests share that one broker and run one after another within this file (the outage test
 * takes the broker down for everyone), with random topic names.
 */

const brokers = () => serviceEnv().KAFKA_BROKERS;
const topicName = (what: string) => `sk-test-${what}-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;

async function newTopic(what: string, partitions = 4): Promise<string> {
  const name = topicName(what);
  await createKafkaTopic(name, partitions);
  return name;
}

/** A topic name whose metadata answers UNKNOWN_TOPIC_OR_PARTITION, as a real broker does for a missing topic. */
const missingTopics = new Set<string>();
async function missingTopic(): Promise<string> {
  const name = topicName('missing');
  await kafkaControl(`topic-error ${name} UNKNOWN_TOPIC_OR_PART`);
  missingTopics.add(name);
  return name;
}
async function clearMissingTopics(): Promise<void> {
  for (const name of missingTopics) await kafkaControl(`topic-error ${name} NO_ERROR`);
  missingTopics.clear();
}

/** Parses sink options the way `sidekick run` does, so every default is the real one. */
function configure(options: Record<string, unknown>, dispatch: Record<string, unknown> = {}) {
  const config = parseConfig({ sinks: { kafka: { type: 'kafka', brokers: brokers(), ...options, ...dispatch } } }, { sinks: sinkDefinitions });
  const entry = config.sinks[0]!;
  return { options: entry.options as Parameters<typeof kafkaSink.create>[0], dispatch: entry.dispatch };
}

function makeSink(options: Record<string, unknown>, name = 'kafka'): Sink {
  return kafkaSink.create(configure(options).options, contractContext(name));
}

interface Received {
  readonly topic: string;
  readonly partition: number;
  readonly offset: number;
  readonly key: string | null;
  readonly value: string;
  readonly headers: Record<string, string>;
  readonly timestamp: string;
}

const reader = new Kafka({ clientId: 'sk-test-reader', brokers: [brokers()], logLevel: logLevel.NOTHING });
let admin: Admin;
beforeAll(async () => {
  admin = reader.admin();
  await admin.connect();
});
afterAll(async () => {
  await admin?.disconnect();
});

async function endOffsets(topics: readonly string[]): Promise<number> {
  let total = 0;
  for (const topic of topics) {
    for (const p of await admin.fetchTopicOffsets(topic)) total += Number(p.high) - Number(p.low);
  }
  return total;
}

/**
 * Reads every record now in `topics` with an independent consumer in a fresh group (from the
 * beginning, up to the end offsets fetched first). Bounded: throws with what it got on timeout.
 */
async function readAll(topics: readonly string[], timeoutMs = 60_000): Promise<Received[]> {
  const total = await endOffsets(topics);
  if (total === 0) return [];
  const consumer = reader.consumer({
    groupId: `sk-test-group-${randomBytes(4).toString('hex')}`,
    sessionTimeout: 10_000,
    heartbeatInterval: 500,
    maxWaitTimeInMs: 100,
  });
  const got: Received[] = [];
  try {
    await consumer.connect();
    await consumer.subscribe({ topics: [...topics], fromBeginning: true });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`read ${got.length} of ${total} records from ${topics.join(', ')} within ${timeoutMs} ms`)),
        timeoutMs,
      );
      consumer
        .run({
          eachBatch: async ({ batch }) => {
            for (const m of batch.messages) {
              const headers: Record<string, string> = {};
              for (const [k, v] of Object.entries(m.headers ?? {})) headers[k] = String(v);
              got.push({
                topic: batch.topic,
                partition: batch.partition,
                offset: Number(m.offset),
                key: m.key === null ? null : m.key.toString(),
                value: m.value?.toString() ?? '',
                headers,
                timestamp: m.timestamp,
              });
            }
            if (got.length >= total) {
              clearTimeout(timer);
              resolve();
            }
          },
        })
        .catch(reject);
    });
  } finally {
    await consumer.disconnect();
  }
  return got;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
    server.on('error', reject);
  });
}

/** Realistic row changes: `keys` rows of public.orders, each inserted then updated `perKey - 1` times, interleaved. */
function rowChanges(keys: number, perKey: number, channel = 'public.orders'): Envelope[] {
  const out: Envelope[] = [];
  let id = 1_000_000;
  const base = Date.now();
  for (let version = 0; version < perKey; version++) {
    for (let k = 0; k < keys; k++) {
      const row = { id: k, status: version === 0 ? 'new' : 'paid', version, total: `${(k * 3.7).toFixed(2)}`, note: 'ünïcode ✓' };
      out.push({
        id: String(++id),
        source: 'table',
        channel,
        op: version === 0 ? 'INSERT' : 'UPDATE',
        schema: 'public',
        table: 'orders',
        key: String(k),
        new: row,
        old: version === 0 ? null : { ...row, version: version - 1 },
        payload: undefined,
        at: new Date(base + id).toISOString(),
        txid: String(5000 + id),
      });
    }
  }
  return out;
}

/** Same key → one partition, and that partition's offsets follow the envelopes' order (first copies; retries may duplicate). */
function expectPerKeyOrder(records: readonly Received[], envelopes: readonly Envelope[]): void {
  const position = new Map(envelopes.map((e, i) => [e.id, i]));
  const byKey = new Map<string, Received[]>();
  for (const r of records) {
    const list = byKey.get(r.key ?? '') ?? [];
    list.push(r);
    byKey.set(r.key ?? '', list);
  }
  for (const [key, list] of byKey) {
    expect(new Set(list.map((r) => `${r.topic}/${r.partition}`)).size, `key ${key} spread over partitions`).toBe(1);
    list.sort((a, b) => a.offset - b.offset);
    const seen = new Set<string>();
    let last = -1;
    for (const r of list) {
      if (seen.has(r.headers.id!)) continue; // a redelivered duplicate: at-least-once
      seen.add(r.headers.id!);
      const at = position.get(r.headers.id!)!;
      expect(at, `key ${key}: envelope ${r.headers.id} at offset ${r.offset} overtook an earlier one`).toBeGreaterThan(last);
      last = at;
    }
  }
}

function dispatcherFor(sink: Sink, dispatch: DispatchOptions) {
  return createDispatcher({ sink, options: dispatch, logger: quietLogger });
}

describe('kafka sink (librdkafka mock cluster, Kafka wire protocol)', () => {
  afterEach(clearMissingTopics);

  let contractTopic = '';
  sinkContract({
    name: 'kafka (librdkafka mock cluster)',
    async create() {
      contractTopic ||= await newTopic('contract');
      return makeSink({ topic: contractTopic });
    },
    async received() {
      return (await readAll([contractTopic])).map((r) => r.headers.id!);
    },
    async createUnreachable() {
      return makeSink({ brokers: `127.0.0.1:${await freePort()}`, topic: 't', connectionTimeout: 1000 });
    },
    async fatalCase() {
      const good = await newTopic('fatal-good');
      const missing = await missingTopic();
      const batch = [good, missing, good, missing, good].map((channel) => testEnvelope({ channel }));
      return { sink: makeSink({ topic: '{channel}' }), batch, fatal: [1, 3] };
    },
  });

  it('names the missing topic in the error, and check() reports brokers and the topic', async () => {
    const missing = await missingTopic();
    const sink = makeSink({ topic: missing });
    try {
      await sink.start(new AbortController().signal);
      const [outcome] = await sink.send([testEnvelope()], new AbortController().signal);
      expect(outcome?.ok).toBe(false);
      if (outcome?.ok === false) {
        expect(outcome.error.retriable).toBe(false);
        expect(outcome.error.message).toBe(`topic "${missing}" does not exist; create it first (pg-sidekick never relies on topic auto-creation)`);
      }
      await expect(sink.check!(new AbortController().signal)).rejects.toThrow(`topic "${missing}" does not exist`);
    } finally {
      await sink.stop();
    }
    // The mock fails metadata for *all* topics while one is marked missing; a real broker would not.
    await clearMissingTopics();
    const present = await newTopic('check', 3);
    const ok = makeSink({ topic: present });
    expect(await ok.check!(new AbortController().signal)).toMatch(new RegExp(`^1 broker\\(s\\) .*; topic "${present}" exists \\(3 partitions\\)$`));
    await ok.stop();
  });

  it('delivers 10 000 row changes (500 keys × 20) through the dispatcher: none missing, per-key order, key and headers', async () => {
    const topic = await newTopic('10k', 4);
    const { options, dispatch } = configure({ topic });
    const sink = kafkaSink.create(options, contractContext('kafka'));
    const dispatcher = dispatcherFor(sink, dispatch);
    const envelopes = rowChanges(500, 20);
    try {
      await sink.start(new AbortController().signal);
      const results = await Promise.all(envelopes.map((e) => dispatcher.deliver(e)));
      expect(results.filter((r) => r.status !== 'delivered')).toEqual([]);
    } finally {
      await dispatcher.stop(5_000);
      await sink.stop();
    }
    const records = await readAll([topic]);
    expect(records).toHaveLength(envelopes.length);
    expect(new Set(records.map((r) => r.headers.id)).size).toBe(envelopes.length);
    const byId = new Map(envelopes.map((e) => [e.id, e]));
    for (const r of records) {
      const e = byId.get(r.headers.id!)!;
      expect(r.key).toBe(e.key);
      expect(r.headers).toEqual({ id: e.id, channel: 'public.orders', source: 'table', op: e.op });
      expect(r.timestamp).toBe(String(Date.parse(e.at)));
    }
    expect(JSON.parse(records[0]!.value)).toEqual(envelopeJson(byId.get(records[0]!.headers.id!)!));
    expectPerKeyOrder(records, envelopes);
  });

  it('a busy NOTIFY channel: its events go out in runs (ordered sink), all in one partition, in order', async () => {
    const topic = await newTopic('busy', 4);
    const { options, dispatch } = configure({ topic });
    const inner = kafkaSink.create(options, contractContext('kafka'));
    let sends = 0;
    const sink: Sink = {
      ...inner,
      ordered: inner.ordered,
      start: (s) => inner.start(s),
      stop: () => inner.stop(),
      send: (b, s) => {
        sends++;
        return inner.send(b, s);
      },
    };
    const dispatcher = dispatcherFor(sink, dispatch);
    const envelopes = Array.from(
      { length: 3_000 },
      (_, i): Envelope => ({
        id: `busy-${i}`,
        source: 'notify',
        channel: 'jobs',
        payload: { job: i },
        raw: `{"job":${i}}`,
        at: new Date().toISOString(),
        pid: 1,
      }),
    );
    try {
      await sink.start(new AbortController().signal);
      const results = await Promise.all(envelopes.map((e) => dispatcher.deliver(e)));
      expect(results.filter((r) => r.status !== 'delivered')).toEqual([]);
    } finally {
      await dispatcher.stop(5_000);
      await sink.stop();
    }
    // One key (the channel) is one lane: without runs this would take 3 000 produce requests in a row.
    expect(sends).toBeLessThan(100);
    const records = await readAll([topic]);
    expect(new Set(records.map((r) => r.partition)).size).toBe(1);
    expect(records.sort((a, b) => a.offset - b.offset).map((r) => r.headers.id)).toEqual(envelopes.map((e) => e.id));
  });

  it("after a failed request, the rest of the topic's batch is not sent (nothing overtakes what failed)", async () => {
    const topic = await newTopic('overtake', 1);
    const sink = makeSink({ topic });
    // 8 changes of one row, ~100 kB each: more than one produce request (512 KiB each) for one key's run.
    const big = 'x'.repeat(100_000);
    const run = rowChanges(1, 8).map((e) => ({ ...e, new: { ...e.new, big } }));
    try {
      await sink.start(new AbortController().signal);
      await kafkaControl('push-errors Produce NOT_LEADER_FOR_PARTITION');
      const failed = await sink.send(run, new AbortController().signal);
      expect(failed.every((o) => !o.ok && o.error.retriable)).toBe(true);
      expect(await endOffsets([topic])).toBe(0);
      expect(await sink.send(run, new AbortController().signal)).toEqual(run.map(() => ({ ok: true })));
    } finally {
      await sink.stop();
    }
    expect((await readAll([topic])).sort((a, b) => a.offset - b.offset).map((r) => r.headers.id)).toEqual(run.map((e) => e.id));
  });

  it('writes each format as documented (envelope, payload, cloudevents binary and structured), and gzip', async () => {
    const formats = {
      envelope: { format: 'envelope' },
      payload: { format: 'payload' },
      binary: { format: 'cloudevents', cloudevents: { mode: 'binary' } },
      structured: { format: 'cloudevents', cloudevents: { mode: 'structured' } },
      gzip: { format: 'envelope', compression: 'gzip' },
    } as const;
    // Count what kafkajs' GZIP codec compresses: proves the records really went out gzipped.
    const codecs = kafkajs.CompressionCodecs as Record<
      number,
      () => { compress(e: unknown): Promise<Buffer>; decompress(b: Buffer): Promise<Buffer> }
    >;
    const gzipFactory = codecs[kafkajs.CompressionTypes.GZIP]!;
    let gzipped = 0;
    codecs[kafkajs.CompressionTypes.GZIP] = () => {
      const codec = gzipFactory();
      return {
        compress: (e) => {
          gzipped++;
          return codec.compress(e);
        },
        decompress: (b) => codec.decompress(b),
      };
    };
    const topics: Record<string, string> = {};
    const row = rowChanges(1, 2)[1]!;
    const notify: Envelope = {
      id: 'n-1',
      source: 'notify',
      channel: 'jobs',
      payload: 'run report 7',
      raw: 'run report 7',
      at: new Date().toISOString(),
      pid: 42,
    };
    try {
      for (const [name, opts] of Object.entries(formats)) {
        topics[name] = await newTopic(name, 1);
        const sink = makeSink({ topic: topics[name], ...opts });
        const result = await sink.send([row, notify], new AbortController().signal);
        expect(
          result.every((o) => o.ok),
          name,
        ).toBe(true);
        await sink.stop();
      }
    } finally {
      codecs[kafkajs.CompressionTypes.GZIP] = gzipFactory;
    }
    expect(gzipped).toBeGreaterThan(0);
    const all = await readAll(Object.values(topics));
    const of = (name: string) => all.filter((r) => r.topic === topics[name]).sort((a, b) => a.offset - b.offset);

    const [envRow, envNotify] = of('envelope');
    expect(JSON.parse(envRow!.value)).toEqual(envelopeJson(row));
    expect(envRow!.key).toBe(row.key);
    expect(envRow!.headers).toEqual({ id: row.id, channel: 'public.orders', source: 'table', op: 'UPDATE' });
    expect(JSON.parse(envNotify!.value)).toEqual(envelopeJson(notify));
    expect(envNotify!.key).toBe('jobs'); // no row key: the channel keeps a channel's events in one partition
    expect(envNotify!.headers).toEqual({ id: 'n-1', channel: 'jobs', source: 'notify' });

    const [payRow, payNotify] = of('payload');
    expect(JSON.parse(payRow!.value)).toEqual(row.new);
    expect(payNotify!.value).toBe('run report 7');
    expect(payNotify!.headers['content-type']).toBe('text/plain; charset=utf-8');

    const [binRow] = of('binary');
    expect(binRow!.headers).toMatchObject({
      ce_specversion: '1.0',
      ce_id: row.id,
      ce_source: '/pg-sidekick/public.orders',
      ce_type: 'pg-sidekick.row.update',
      ce_time: row.at,
      ce_subject: row.key,
      'content-type': 'application/json',
      id: row.id,
    });
    // The one CloudEvents mapping (docs/cloudevents.md): data is the row change, not the envelope.
    const data = { op: 'UPDATE', schema: 'public', table: 'orders', key: row.key, new: row.new, old: row.old, txid: row.txid };
    expect(JSON.parse(binRow!.value)).toEqual(data);

    const [stRow] = of('structured');
    expect(stRow!.headers['content-type']).toBe('application/cloudevents+json; charset=utf-8');
    expect(JSON.parse(stRow!.value)).toMatchObject({ specversion: '1.0', id: row.id, type: 'pg-sidekick.row.update', data });

    const gz = of('gzip');
    expect(gz.map((r) => r.headers.id)).toEqual([row.id, 'n-1']);
    expect(JSON.parse(gz[0]!.value)).toEqual(envelopeJson(row));
  });

  it('splits a request the broker rejects as too large; a single record it rejects is fatal', async () => {
    const topic = await newTopic('too-large', 1);
    const sink = makeSink({ topic });
    try {
      await sink.start(new AbortController().signal);
      const batch = [testEnvelope(), testEnvelope(), testEnvelope(), testEnvelope()];
      // The next produce request fails as a real broker answers a batch over message.max.bytes.
      await kafkaControl('push-errors Produce MSG_SIZE_TOO_LARGE');
      expect(await sink.send(batch, new AbortController().signal)).toEqual(batch.map(() => ({ ok: true })));
      await kafkaControl('push-errors Produce MSG_SIZE_TOO_LARGE');
      const [alone] = await sink.send([testEnvelope()], new AbortController().signal);
      expect(alone?.ok === false && alone.error.code).toBe('KAFKA_RECORD_TOO_LARGE');
      expect(alone?.ok === false && alone.error.retriable).toBe(false);
      expect((await readAll([topic])).map((r) => r.headers.id)).toEqual(batch.map((e) => e.id));
    } finally {
      await sink.stop();
    }
  });

  it('an "unknown topic" answer for a topic it already wrote to is retried with a fresh producer, not dead-lettered', async () => {
    const topic = await newTopic('vanish', 1);
    const sink = makeSink({ topic });
    try {
      const first = testEnvelope();
      expect(await sink.send([first], new AbortController().signal)).toEqual([{ ok: true }]);
      await kafkaControl('push-errors Produce UNKNOWN_TOPIC_OR_PART');
      const [blip] = await sink.send([testEnvelope()], new AbortController().signal);
      expect(blip?.ok === false && blip.error.code).toBe('KAFKA_TOPIC_VANISHED');
      expect(blip?.ok === false && blip.error.retriable).toBe(true);
      const again = testEnvelope();
      expect(await sink.send([again], new AbortController().signal)).toEqual([{ ok: true }]);
      expect((await readAll([topic])).map((r) => r.headers.id)).toEqual([first.id, again.id]);
    } finally {
      await sink.stop();
    }
  });

  it('recovers the producer when the broker drops every connection mid-stream: nothing lost, per-key order kept', async () => {
    const topic = await newTopic('outage', 4);
    const { options, dispatch } = configure(
      { topic, connectionTimeout: 500, timeout: 2_000 },
      { retry: { initialDelay: 50, maxDelay: 400, maxAge: '60s' }, batch: { size: 100 } },
    );
    const inner = kafkaSink.create(options, contractContext('kafka'));
    // Watch the sink's outcomes: the outage must really have hit it.
    let unavailable = 0;
    let delivered = 0;
    const sink: Sink = {
      ...inner,
      start: (s) => inner.start(s),
      stop: () => inner.stop(),
      async send(batch, signal) {
        const out: readonly ItemOutcome[] = await inner.send(batch, signal);
        for (const o of out) {
          if (o.ok) delivered++;
          else if (o.error instanceof RetriableError && o.error.unavailable) unavailable++;
        }
        return out;
      },
    };
    const dispatcher = dispatcherFor(sink, dispatch);
    const envelopes = rowChanges(100, 30);
    let down = false;
    try {
      await sink.start(new AbortController().signal);
      const pending = envelopes.slice(0, 1000).map((e) => dispatcher.deliver(e));
      await waitFor(() => delivered >= 300, 'some deliveries before the outage');
      await kafkaControl('broker-down');
      down = true;
      pending.push(...envelopes.slice(1000, 2000).map((e) => dispatcher.deliver(e)));
      await waitFor(() => unavailable >= 5, 'the sink to notice the broker is gone', 15_000);
      await kafkaControl('broker-up');
      down = false;
      pending.push(...envelopes.slice(2000).map((e) => dispatcher.deliver(e)));
      const results = await Promise.all(pending);
      expect(results.filter((r) => r.status !== 'delivered')).toEqual([]);
    } finally {
      if (down) await kafkaControl('broker-up');
      await dispatcher.stop(5_000);
      await sink.stop();
    }
    const records = await readAll([topic]);
    const ids = new Set(records.map((r) => r.headers.id));
    expect(envelopes.filter((e) => !ids.has(e.id)).map((e) => e.id)).toEqual([]);
    expect(ids.size).toBe(envelopes.length);
    expectPerKeyOrder(records, envelopes);
  });

  it('connects lazily in send when start failed because the broker was down', async () => {
    const topic = await newTopic('lazy', 1);
    const sink = makeSink({ topic, connectionTimeout: 500 });
    try {
      await kafkaControl('broker-down');
      try {
        const failed = await sink.start(new AbortController().signal).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(failed).toBeInstanceOf(RetriableError);
        expect((failed as RetriableError).unavailable).toBe(true);
        const [outcome] = await sink.send([testEnvelope()], new AbortController().signal);
        expect(outcome?.ok === false && outcome.error instanceof RetriableError && outcome.error.unavailable).toBe(true);
      } finally {
        await kafkaControl('broker-up');
      }
      const e = testEnvelope();
      expect(await sink.send([e], new AbortController().signal)).toEqual([{ ok: true }]);
      expect((await readAll([topic])).map((r) => r.headers.id)).toEqual([e.id]);
    } finally {
      await sink.stop();
    }
  });

  it('a connection the brokers refuse (here: SASL, which the mock does not speak) makes the sink unavailable, not the events fatal', async () => {
    const sink = makeSink({ topic: 't', sasl: { mechanism: 'plain', username: 'u', password: 'p' } });
    try {
      const failed = await sink.start(new AbortController().signal).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(failed).toBeInstanceOf(RetriableError);
      expect((failed as RetriableError).unavailable).toBe(true);
      expect((failed as Error).message).toMatch(/^cannot connect to the Kafka brokers \(127\.0\.0\.1:\d+\): /);
      const [outcome] = await sink.send([testEnvelope()], new AbortController().signal);
      expect(outcome?.ok === false && outcome.error instanceof RetriableError && outcome.error.unavailable).toBe(true);
    } finally {
      await sink.stop();
    }
  });

  it('end to end: a real bridge forwards pg_notify on a LISTEN channel to the topic', async () => {
    const db = await createTestDatabase('skkafka');
    const topic = await newTopic('bridge', 2);
    const channel = `orders_${randomBytes(3).toString('hex')}`;
    const config = parseConfig(
      {
        database: db.url,
        listen: [channel],
        sinks: { kafka: { type: 'kafka', brokers: '${KAFKA_BROKERS}', topic, format: 'envelope' } },
        routes: [{ from: channel, to: 'kafka' }],
      },
      { sinks: sinkDefinitions, env: { KAFKA_BROKERS: brokers() } },
    );
    const bridge = createBridge({ config, logger: quietLogger });
    try {
      await bridge.start();
      await waitFor(() => bridge.readiness().ready, 'the bridge to be ready');
      const client = await db.client();
      await client.query('SELECT pg_notify($1, $2), pg_notify($1, $3)', [channel, '{"order": 1}', 'plain text']);
      await waitFor(async () => (await endOffsets([topic])) >= 2, 'two records on the topic', 20_000, 50);
    } finally {
      await bridge.stop();
      await db.drop();
    }
    const records = (await readAll([topic])).sort((a, b) => a.offset - b.offset);
    expect(records.map((r) => JSON.parse(r.value).payload)).toEqual([{ order: 1 }, 'plain text']);
    expect(records.every((r) => r.key === channel && r.headers.channel === channel && r.headers.source === 'notify')).toBe(true);
    expect(new Set(records.map((r) => r.headers.id)).size).toBe(2);
  });
});
