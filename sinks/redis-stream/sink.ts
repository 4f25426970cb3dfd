import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';
import {
  bounded,
  ConfigError,
  createLink,
  errorMessage,
  FatalError,
  OK,
  redactUrl,
  RetriableError,
  SidekickError,
  type Envelope,
  type ItemOutcome,
  type SendResult,
  type Sink,
  type SinkContext,
} from '../../src/sink-kit.js';
import { classifyRedisError, createEntryBuilder, type XaddArgs } from './entry.js';
import type { RedisStreamOptions } from './options.js';

type Client = Redis | Cluster;

/** Fail fast while disconnected; see FORCED_CLIENT_OPTIONS. */
const SAFE: RedisOptions = {
  lazyConnect: true,
  enableOfflineQueue: false,
  // 0: on a lost connection, commands already sent are rejected at once instead of waiting for
  // (and being re-sent on) the next connection; our dispatcher retries them in order.
  maxRetriesPerRequest: 0,
  autoResendUnfulfilledCommands: false,
  // No background reconnect: a client whose connection closes ends, and the kit's reconnect helper
  // connects a new one on the next send, paced by the dispatcher's backoff (one engine, not two).
  retryStrategy: () => null,
};

/** How long a connect may take (TCP, AUTH, the ready check) before it counts as failed. */
const CONNECT_WAIT_MS = 10_000;

function describe(options: RedisStreamOptions): string {
  if (options.cluster) return `cluster ${options.cluster.nodes.map((n) => (typeof n === 'string' ? n : `${n.host}:${n.port}`)).join(',')}`;
  if (options.url) return redactUrl(options.url);
  const sentinels = options.options.sentinels as { host?: string; port?: number }[] | undefined;
  return `sentinel ${String(options.options.name ?? '')}@${(sentinels ?? []).map((s) => `${s.host ?? ''}:${s.port ?? 26379}`).join(',')}`;
}

/** Checks where to connect now (a ConfigError at create), and returns how to make a client for each connect. */
function clientFactory(options: RedisStreamOptions, name: string): () => Client {
  const user: RedisOptions = { connectionName: `pg-sidekick:${name}`, ...options.options };
  const { cluster: clusterConfig, url } = options;
  if (clusterConfig) {
    const cluster: ClusterOptions = {
      ...clusterConfig.options,
      lazyConnect: true,
      enableOfflineQueue: false,
      // One XADD per envelope, written together per node: Cluster pipelines must stay in one slot.
      enableAutoPipelining: true,
      // The cluster as a whole is not reconnected in the background either (see SAFE); its node
      // connections follow the slot map, as ioredis does it.
      clusterRetryStrategy: () => null,
      redisOptions: { ...user, ...SAFE },
    };
    return () => new Cluster(clusterConfig.nodes as never, cluster);
  }
  if (!url && !options.options.sentinels) {
    throw new ConfigError(`redis-stream sink ${name}: give url, options.sentinels (with options.name) or cluster.nodes`);
  }
  return url ? () => new Redis(url, { ...user, ...SAFE }) : () => new Redis({ ...user, ...SAFE });
}

/**
 * The Redis Streams sink: one XADD per envelope, all of a batch in one pipeline (one round trip),
 * with one outcome per command. One client at a time, connected lazily by the kit's reconnect
 * helper; a client whose connection closes ends (ioredis does not reconnect it) and is retired, so
 * a send finds no connection, connects a new client, and fails at once as retriable + unavailable
 * while Redis refuses — the dispatcher backs off. Nothing waits in a hidden queue, nothing is
 * re-sent out of order.
 */
export function createRedisStreamSink(options: RedisStreamOptions, context: SinkContext): Sink {
  const { logger } = context;
  const where = describe(options);
  const entry = createEntryBuilder(options);
  const newClient = clientFactory(options, context.name);
  let stopped: Promise<void> | undefined;

  function unavailable(what: string): SidekickError {
    return new RetriableError('REDIS_UNAVAILABLE', `redis ${where}: ${what}`, { unavailable: true });
  }

  async function connect(): Promise<Client> {
    const client = newClient();
    // Always listened to: an 'error' without a listener is printed by ioredis. What it means for
    // the sink comes through connect() and the commands' own replies.
    client.on('error', () => {});
    try {
      await bounded(client.connect(), { ms: CONNECT_WAIT_MS, timedOut: () => unavailable(`not connected (${client.status})`) });
    } catch (error) {
      client.disconnect();
      throw error instanceof SidekickError ? error : classifyRedisError(error, where);
    }
    // 'close' (not only 'end'): the link is of no use from the moment its connection is gone.
    client.once('close', () => links.retire(client, 'connection closed'));
    return client;
  }

  const links = createLink<Client>({
    connect,
    close: quit,
    isBroken: (c) => c.status !== 'ready',
    onRetire: () => {
      if (!stopped) logger.warn({ redis: where }, 'redis connection lost; reconnecting on the next send');
    },
    onConnected: (_c, failedBefore) => {
      if (failedBefore > 0) logger.info({ redis: where }, 'redis connection ready again');
    },
    onConnectFailed: (error, failures) => {
      // One line per outage; the dispatcher logs the sink-wide backoff.
      if (failures === 1 && !stopped) logger.warn({ redis: where, err: errorMessage(error) }, 'redis connect failed; retrying on the next send');
    },
    closedError: () => unavailable('sink stopped'),
    abortedError: () => new RetriableError('ABORTED', `redis ${where}: aborted`),
  });

  /** QUIT waits for the replies of commands already sent; bounded in case the server is gone. */
  async function quit(client: Client): Promise<void> {
    if (client.status === 'ready') await bounded(client.quit(), { ms: 5_000 }).catch(() => {});
    client.disconnect();
  }

  async function execute(client: Client, commands: XaddArgs[]): Promise<[Error | null, unknown][]> {
    if (client instanceof Cluster) {
      return Promise.all(
        commands.map((args) =>
          client.xadd(...(args as [string, ...string[]])).then(
            (id): [null, unknown] => [null, id],
            (error: Error): [Error, null] => [error, null],
          ),
        ),
      );
    }
    const pipeline = client.pipeline();
    for (const args of commands) pipeline.xadd(...(args as [string, ...string[]]));
    const results = await pipeline.exec();
    if (!results) throw unavailable('pipeline returned no results');
    return results;
  }

  return {
    name: context.name,
    type: 'redis-stream',
    // One pipeline on one connection: Redis applies a batch in order, so it may carry a run of one key.
    // (Cluster: the XADDs of one stream go to one node, in order, on its connection.)
    ordered: true,
    async start(signal) {
      await links.get(signal);
    },
    async send(batch: readonly Envelope[], signal): Promise<SendResult> {
      if (signal.aborted) throw new RetriableError('ABORTED', `redis ${where}: aborted`);
      // Not connected: connect now; failing that, the whole batch fails at once (retriable,
      // unavailable) and the dispatcher backs the sink off.
      const client = await links.get(signal);
      const outcomes = new Array<ItemOutcome | undefined>(batch.length);
      // One command per envelope that can be built; an envelope that cannot (a stream template field
      // it lacks) fails alone, with its own outcome, and the others go out.
      const commands: XaddArgs[] = [];
      const at: number[] = [];
      for (let i = 0; i < batch.length; i++) {
        const e = batch[i] as Envelope;
        try {
          commands.push(entry(e));
          at.push(i);
        } catch (error) {
          outcomes[i] = {
            ok: false,
            error:
              error instanceof SidekickError
                ? error
                : new FatalError('REDIS_ENTRY', `redis ${where}: cannot build the entry for ${e.id}: ${errorMessage(error)}`, { cause: error }),
          };
        }
      }
      if (commands.length === 0) return outcomes as ItemOutcome[];
      try {
        // One timer per batch (ioredis's commandTimeout would arm one per command). Either way the
        // pipeline may still be applied after we stop waiting: the retry can duplicate, never lose.
        const results = await bounded(
          links.use(client, () => execute(client, commands)),
          {
            ms: options.timeout,
            signal,
            aborted: () => new RetriableError('ABORTED', `redis ${where}: aborted before Redis answered`),
            timedOut: () =>
              new RetriableError('REDIS_TIMEOUT', `redis ${where}: no reply to ${commands.length} XADD within ${options.timeout} ms`, {
                unavailable: true,
              }),
          },
        );
        results.forEach(([error], k) => {
          outcomes[at[k] as number] = error ? { ok: false, error: classifyRedisError(error, where) } : OK;
        });
      } catch (error) {
        throw error instanceof RetriableError ? error : classifyRedisError(error, where);
      }
      return outcomes.map((o) => o ?? { ok: false, error: unavailable('no reply') });
    },
    stop() {
      stopped ??= links.close();
      return stopped;
    },
    async check(signal) {
      const client = await links.get(signal);
      const info = client instanceof Cluster ? '' : await client.info('server');
      const version = /redis_version:(\S+)/.exec(info)?.[1];
      return `${where}${version ? ` (Redis ${version})` : ''}`;
    },
  };
}
