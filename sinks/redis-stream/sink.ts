import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';
import type { Envelope } from '../../src/envelope.js';
import { ConfigError, errorMessage, FatalError, RetriableError, SidekickError } from '../../src/errors.js';
import { redactUrl } from '../../src/logger.js';
import { OK, type ItemOutcome, type SendResult, type Sink, type SinkContext } from '../../src/sink.js';
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
};

function describe(options: RedisStreamOptions): string {
  if (options.cluster) return `cluster ${options.cluster.nodes.map((n) => (typeof n === 'string' ? n : `${n.host}:${n.port}`)).join(',')}`;
  if (options.url) return redactUrl(options.url);
  const sentinels = options.options.sentinels as { host?: string; port?: number }[] | undefined;
  return `sentinel ${String(options.options.name ?? '')}@${(sentinels ?? []).map((s) => `${s.host ?? ''}:${s.port ?? 26379}`).join(',')}`;
}

function createClient(options: RedisStreamOptions, name: string): Client {
  const user: RedisOptions = { connectionName: `pg-sidekick:${name}`, ...options.options };
  if (options.cluster) {
    const cluster: ClusterOptions = {
      ...options.cluster.options,
      lazyConnect: true,
      enableOfflineQueue: false,
      // One XADD per envelope, written together per node: Cluster pipelines must stay in one slot.
      enableAutoPipelining: true,
      redisOptions: { ...user, ...SAFE },
    };
    return new Cluster(options.cluster.nodes as never, cluster);
  }
  if (!options.url && !options.options.sentinels) {
    throw new ConfigError(`redis-stream sink ${name}: give url, options.sentinels (with options.name) or cluster.nodes`);
  }
  return options.url ? new Redis(options.url, { ...user, ...SAFE }) : new Redis({ ...user, ...SAFE });
}

/**
 * The Redis Streams sink: one XADD per envelope, all of a batch in one pipeline (one round trip),
 * with one outcome per command. ioredis reconnects in the background (its retryStrategy); while it
 * is down, sends fail at once as retriable + unavailable and the dispatcher backs off — nothing
 * waits in a hidden queue, nothing is re-sent out of order.
 */
export function createRedisStreamSink(options: RedisStreamOptions, context: SinkContext): Sink {
  const { logger } = context;
  const where = describe(options);
  const entry = createEntryBuilder(options);
  const client = createClient(options, context.name);
  let stopped: Promise<void> | undefined;
  let down = false;

  client.on('error', (error: Error) => {
    // ioredis emits one per failed attempt while reconnecting: log once per outage.
    if (!down && !stopped) logger.warn({ redis: where, err: errorMessage(error) }, 'redis connection error; reconnecting in the background');
    down = true;
  });
  client.on('ready', () => {
    if (down) logger.info({ redis: where }, 'redis connection ready again');
    down = false;
  });

  function unavailable(what: string): SidekickError {
    return new RetriableError('REDIS_UNAVAILABLE', `redis ${where}: ${what}`, { unavailable: true });
  }

  /** Waits until the client is ready (connecting it if nobody has), or throws a retriable error. */
  async function ready(signal: AbortSignal | undefined): Promise<void> {
    if (client.status === 'ready') return;
    if (stopped) throw unavailable('sink stopped');
    if (client.status === 'wait' || client.status === 'end') {
      try {
        await client.connect();
        return;
      } catch (error) {
        // ioredis keeps retrying in the background (unless the status is 'end').
        throw classifyRedisError(error, where);
      }
    }
    // Connecting or reconnecting: wait for the outcome of the current attempt, bounded.
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => finish(unavailable(`not connected (${client.status})`)), 10_000);
      timer.unref();
      const onReady = () => finish();
      const onError = (error: Error) => finish(classifyRedisError(error, where));
      const onAbort = () => finish(new RetriableError('ABORTED', `redis ${where}: aborted`));
      function finish(error?: SidekickError) {
        clearTimeout(timer);
        client.off('ready', onReady);
        client.off('error', onError);
        signal?.removeEventListener('abort', onAbort);
        if (error) reject(error); else resolve();
      }
      client.once('ready', onReady);
      client.once('error', onError);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  async function execute(commands: XaddArgs[]): Promise<[Error | null, unknown][]> {
    if (client instanceof Cluster) {
      return Promise.all(commands.map((args) => client.xadd(...(args as [string, ...string[]]))
        .then((id): [null, unknown] => [null, id], (error: Error): [Error, null] => [error, null])));
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
      await ready(signal);
    },
    async send(batch: readonly Envelope[], signal): Promise<SendResult> {
      if (signal.aborted) throw new RetriableError('ABORTED', `redis ${where}: aborted`);
      // While disconnected, fail the whole batch at once: the dispatcher backs the sink off.
      if (client.status !== 'ready') {
        if (client.status === 'wait' && !stopped) await ready(signal);
        else throw unavailable(`not connected (${client.status})`);
      }
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
          outcomes[i] = { ok: false, error: error instanceof SidekickError ? error
            : new FatalError('REDIS_ENTRY', `redis ${where}: cannot build the entry for ${e.id}: ${errorMessage(error)}`, { cause: error }) };
        }
      }
      if (commands.length === 0) return outcomes as ItemOutcome[];
      let onAbort: (() => void) | undefined;
      let timer: NodeJS.Timeout | undefined;
      // One timer per batch (ioredis's commandTimeout would arm one per command).
      const cut = new Promise<'aborted' | 'timeout'>((resolve) => {
        onAbort = () => resolve('aborted');
        signal.addEventListener('abort', onAbort, { once: true });
        timer = setTimeout(() => resolve('timeout'), options.timeout);
        timer.unref();
      });
      try {
        const results = await Promise.race([execute(commands), cut]);
        // Either way the pipeline may still be applied: the retry can duplicate, never lose.
        if (results === 'aborted') throw new RetriableError('ABORTED', `redis ${where}: aborted before Redis answered`);
        if (results === 'timeout') {
          throw new RetriableError('REDIS_TIMEOUT', `redis ${where}: no reply to ${commands.length} XADD within ${options.timeout} ms`, { unavailable: true });
        }
        results.forEach(([error], k) => {
          outcomes[at[k] as number] = error ? { ok: false, error: classifyRedisError(error, where) } : OK;
        });
      } catch (error) {
        throw error instanceof RetriableError ? error : classifyRedisError(error, where);
      } finally {
        clearTimeout(timer);
        if (onAbort) signal.removeEventListener('abort', onAbort);
      }
      return outcomes.map((o) => o ?? { ok: false, error: unavailable('no reply') });
    },
    stop() {
      stopped ??= (async () => {
        if (client.status === 'wait' || client.status === 'end') {
          client.disconnect();
          return;
        }
        // QUIT waits for the replies of commands already sent; bounded in case the server is gone.
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([
          client.status === 'ready' ? client.quit().catch(() => {}) : Promise.resolve(),
          new Promise<void>((resolve) => { timer = setTimeout(resolve, 5_000); timer.unref(); }),
        ]);
        clearTimeout(timer);
        client.disconnect();
      })();
      return stopped;
    },
    async check(signal) {
      await ready(signal);
      const info = client instanceof Cluster ? '' : await client.info('server');
      const version = /redis_version:(\S+)/.exec(info)?.[1];
      return `${where}${version ? ` (Redis ${version})` : ''}`;
    },
  };
}
