import type { Logger } from 'pino';
import type { Config } from './config.js';
import { createDispatcher, type Dispatcher } from './dispatcher/index.js';
import { ConfigError, errorMessage } from './errors.js';
import { createHttpServer, type HttpServer, type Readiness } from './http.js';
import { createMetrics, createSampledGauge, type Metrics } from './metrics.js';
import { databaseConnection, describeConnection } from './pg/connection.js';
import { createStatsClient, registerDatabaseGauges, type StatsClient } from './pg/stats.js';
import { createPipeline, type Pipeline } from './pipeline.js';
import { createHeartbeat, createReadinessChecks, type ReadinessCheck } from './readiness.js';
import { createRouter } from './router.js';
import { createSchedulerMetrics } from './scheduler/metrics.js';
import { createScheduler, type Scheduler } from './scheduler/scheduler.js';
import type { Sink } from './sink.js';
import { createNotifySource } from './source/notify.js';
import { createOutboxSource, type OutboxStatus } from './source/outbox.js';
import { retryForever, settleBy } from './wait.js';

export type { Readiness } from './http.js';

export interface Bridge {
  readonly pipeline: Pipeline;
  readonly metrics: Metrics;
  /** Starts sinks and sources. Resolves once started (sinks and the database keep retrying in the background). */
  start(): Promise<void>;
  /**
   * Stops taking events, finishes in-flight deliveries (up to `shutdown.timeout`), closes everything
   * (up to STOP_CLOSE_GRACE_MS more; what is still not closed then is left behind and logged). Idempotent.
   */
  stop(): Promise<void>;
  readiness(): Readiness;
  /**
   * Adds a check to /readyz, e.g. `outbox` → "the drain loop turned within its interval" (see
   * createHeartbeat in readiness.ts). Returns a function that removes it.
   */
  registerReadinessCheck(name: string, check: ReadinessCheck): () => void;
  /** The /metrics endpoint when `http` is enabled (its address() tells the bound port). */
  readonly http: HttpServer | undefined;
  /** Short scrape-time queries (one pooled connection, closed when idle) for gauges read from the database. */
  readonly stats: StatsClient;
  /** The durable source's state (undefined when `outbox.enabled: false`). */
  readonly outbox: OutboxStatus | undefined;
}

/**
 * Wraps a sink so that `send` waits until `start` has succeeded. `start` is retried with capped,
 * jittered backoff in the background: a broker that is down at boot is not fatal.
 */
function startInBackground(sink: Sink, signal: AbortSignal, logger: Logger): { sink: Sink; started: () => boolean } {
  let ok = false;
  // The same cap as the database's: the `later` sink's start is a database connection, and a
  // broker that is back should be used within seconds too (/readyz waits for every sink).
  const ready = retryForever({ signal, logger, what: 'sink failed to start', fields: { sink: sink.name } }, async (attempt) => {
    await sink.start(signal);
    ok = true;
    if (attempt > 1) logger.info({ sink: sink.name }, 'sink started');
  });
  const gated: Sink = {
    name: sink.name,
    type: sink.type,
    ...(sink.ordered ? { ordered: true } : {}),
    start: () => ready,
    send(batch, s) {
      // Started: the sink's own promise, not one more async layer around it (the hot path).
      if (ok) return sink.send(batch, s);
      return Promise.race([ready, new Promise((resolve) => s.addEventListener('abort', resolve, { once: true }))]).then(() => sink.send(batch, s));
    },
    stop: () => sink.stop(),
    ...(sink.check ? { check: sink.check.bind(sink) } : {}),
  };
  return { sink: gated, started: () => ok };
}

/**
 * How long a stop may take past shutdown.timeout to close connections (outbox acknowledgements,
 * sinks, the HTTP server). The CLI waits STOP_CLOSE_GRACE_MS + a little more before it gives up.
 */
export const STOP_CLOSE_GRACE_MS = 1_000;

export function createBridge(params: {
  config: Config;
  logger: Logger;
  metrics?: Metrics;
  stdout?: NodeJS.WritableStream;
  /** Connection settings resolved by the caller (e.g. from pglater-style flags); default: from config. */
  connection?: import('pg').ClientConfig;
}): Bridge {
  const { config, logger } = params;
  const metrics = params.metrics ?? createMetrics();
  // A server that accepts the TCP connection but never answers must not hang a connect forever:
  // every connection of the bridge (listener, drain, scheduler) gives up after 10 s and retries.
  const resolved = params.connection ? undefined : databaseConnection(config.database);
  for (const warning of resolved?.warnings ?? []) logger.warn(warning);
  const connection = { connectionTimeoutMillis: 10_000, ...(params.connection ?? resolved?.config) };
  const lifetime = new AbortController();
  const started = new Map<string, () => boolean>();
  const readinessChecks = createReadinessChecks();
  const stats = createStatsClient({ connection, logger });
  const dispatchers = new Map<string, Dispatcher>();
  for (const entry of config.sinks) {
    const raw = entry.definition.create(entry.options as never, {
      name: entry.name,
      logger: logger.child({ sink: entry.name }),
      database: connection,
      ...(params.stdout ? { stdout: params.stdout } : {}),
    });
    const gated = startInBackground(raw, lifetime.signal, logger);
    started.set(entry.name, gated.started);
    readinessChecks.register(`sink:${entry.name}`, gated.started);
    dispatchers.set(entry.name, createDispatcher({ sink: gated.sink, options: entry.dispatch, logger, metrics }));
  }
  const router = createRouter(config.routes);
  const pipeline = createPipeline({ router, dispatchers, logger, metrics });
  // The durable path (outbox → sinks); with `enabled: auto` it switches itself off when the sidekick
  // schema is not installed and nothing is captured.
  const drainHeartbeat = createHeartbeat(3 * config.outbox.pollInterval + 30_000);
  const outbox =
    config.outbox.enabled === false
      ? undefined
      : createOutboxSource({
          connection,
          options: config.outbox,
          pipeline,
          logger,
          metrics,
          heartbeat: drainHeartbeat,
          install: config.outbox.enabled === true || config.capture.length > 0,
        });
  // /readyz: the drain is connected and its loop turns (a query stuck on a lock would stop it), and
  // its wake-up LISTEN is up. Registered once the drain is known to be on (at once when capture: or
  // enabled: true says so; otherwise when it found the schema installed).
  let outboxChecked = false;
  const checkOutbox = () => {
    if (!outbox || outboxChecked) return;
    outboxChecked = true;
    readinessChecks.register('outbox', () => outbox.status.connected && drainHeartbeat.alive());
    readinessChecks.register('outbox-wakeup', () => outbox.status.listening);
  };
  if (outbox && (config.outbox.enabled === true || config.capture.length > 0)) checkOutbox();
  if (outbox) {
    createSampledGauge(
      metrics,
      {
        name: 'sidekick_outbox_pending',
        help:
          'Rows in sidekick.outbox and sidekick.row_changes not yet handed to every sink; a row holds one event, or (outbox) a chunk of up to ' +
          "1000 of one statement's changed rows (read on scrape).",
      },
      async (set) => {
        if (!outbox.status.enabled) return;
        const [found] = await stats.query<{ events: boolean }>(`SELECT to_regclass('sidekick.events') IS NOT NULL AS events`);
        const rows = await stats.query<{ n: string }>(`SELECT count(*) AS n FROM sidekick.${found?.events ? 'events' : 'outbox'}`);
        set(Number(rows[0]?.n ?? Number.NaN));
      },
      logger,
    );
    createSampledGauge(
      metrics,
      {
        name: 'sidekick_sink_backlog',
        help: "Events waiting in a sink's durable backlog, sidekick.deliveries (read on scrape).",
        labelNames: ['sink'],
      },
      async (set) => {
        if (!outbox.status.enabled) return;
        const rows = await stats.query<{ sink: string; n: string }>('SELECT sink, count(*) AS n FROM sidekick.deliveries GROUP BY sink');
        for (const name of dispatchers.keys()) set(0, { sink: name });
        for (const r of rows) set(Number(r.n), { sink: r.sink });
      },
      logger,
    );
    createSampledGauge(
      metrics,
      {
        name: 'sidekick_dead_letters',
        help: 'Events in sidekick.dead_letters, per sink (read on scrape; see `sidekick dlq`).',
        labelNames: ['sink'],
      },
      async (set) => {
        if (!outbox.status.enabled) return;
        const rows = await stats.query<{ sink: string; n: string }>('SELECT sink, count(*) AS n FROM sidekick.dead_letters GROUP BY sink');
        for (const name of dispatchers.keys()) set(0, { sink: name });
        for (const r of rows) set(Number(r.n), { sink: r.sink });
      },
      logger,
    );
  }
  // Outbox events and oldest age, per-sink backlog age, due schedules (see src/pg/stats.ts).
  registerDatabaseGauges({ metrics, stats, sinks: [...dispatchers.keys()], outboxEnabled: () => outbox?.status.enabled ?? false, logger });
  const notify = config.listen.length > 0 ? createNotifySource({ connection, channels: config.listen, pipeline, logger, metrics }) : undefined;
  const scheduler: Scheduler | undefined = config.scheduler.enabled
    ? createScheduler({ connection, config: config.scheduler, logger, metrics: createSchedulerMetrics(metrics.registry) })
    : undefined;
  if (notify) readinessChecks.register('listener', () => notify.listener.connected);
  if (scheduler) readinessChecks.register('scheduler', () => scheduler.ready);
  let stopping: Promise<void> | undefined;
  let sourceLoop: Promise<void> | undefined;
  // Fails /readyz from the first signal on, so an orchestrator stops routing to a bridge on its way out.
  readinessChecks.register('running', () => stopping === undefined);

  // Cluster-wide: how full the NOTIFY queue is (0–1). Near 1, NOTIFY starts failing in every
  // session of the server — usually because some session LISTENs and never reads.
  createSampledGauge(
    metrics,
    {
      name: 'sidekick_notification_queue_usage',
      help: "pg_notification_queue_usage(): fraction of the server's NOTIFY queue in use (read on scrape).",
    },
    async (set) => {
      const rows = await stats.query<{ usage: number }>('SELECT pg_notification_queue_usage() AS usage');
      set(Number(rows[0]?.usage ?? Number.NaN));
    },
    logger,
  );

  const http = config.http.enabled
    ? createHttpServer({
        host: config.http.host,
        port: config.http.port,
        registry: metrics.registry,
        readiness: () => readinessChecks.evaluate(),
        logger,
      })
    : undefined;

  return {
    pipeline,
    metrics,
    get outbox() {
      return outbox?.status;
    },
    http,
    stats,
    async start() {
      // Transform modules are loaded before anything is taken in: one that cannot be loaded is a
      // config error (the process exits 1 with the reason), not a dead letter per event.
      await pipeline.ready.catch((error: unknown) => {
        throw new ConfigError(`a transform module cannot be loaded: ${errorMessage(error)}`, { cause: error });
      });
      // First, so /healthz answers and /readyz says why the bridge is not ready while it connects.
      await http?.start();
      // The scheduler retries its database connection in the background, like the sinks.
      if (scheduler) await scheduler.start();
      const outboxStarted = outbox?.start().then(() => {
        if (outbox.status.enabled) checkOutbox();
      });
      if (notify) {
        logger.info({ database: describeConnection(connection), channels: config.listen }, 'listening');
        // The first connection is retried too: a database that is not up yet must not end the bridge.
        sourceLoop = retryForever(
          {
            signal: lifetime.signal,
            logger,
            what: 'cannot connect to the database',
            fields: { database: describeConnection(connection) },
          },
          async () => {
            await notify.start();
            metrics.listenerConnected.set(1);
          },
        );
      }
      await Promise.all([sourceLoop, outboxStarted]);
    },
    stop() {
      stopping ??= (async () => {
        // One deadline for the whole stop, whatever is down (issue 16: with the database gone, the
        // steps below waited on reconnect sleeps and connect timeouts one after the other, 25–32 s
        // for a 10 s timeout). In-flight work gets shutdown.timeout; closing connections gets
        // STOP_CLOSE_GRACE_MS more. A step still running then is left behind: the process exits
        // without it (outbox events it had not acknowledged are delivered again on the next start).
        const timeoutMs = config.shutdown.timeout;
        const deadline = Date.now() + timeoutMs;
        const left = () => Math.max(0, deadline - Date.now());
        const step = async (name: string, work: Promise<unknown> | undefined, by: number) => {
          const outcome = await settleBy(work, by);
          if (outcome.state === 'late') logger.warn({ step: name, timeoutMs }, 'shutdown: still not done at the deadline; going on without it');
          else if (outcome.state === 'failed') logger.warn({ step: name, err: errorMessage(outcome.error) }, 'shutdown: step failed; going on');
        };
        await step('notify', notify?.stop(), deadline);
        await step('outbox-intake', outbox?.stopIntake(), deadline);
        lifetime.abort();
        await step('connect', sourceLoop, deadline);
        // The scheduler's running actions and the sinks' in-flight deliveries finish side by side.
        await step('deliveries', Promise.all([scheduler?.stop(left()), ...[...dispatchers.values()].map((d) => d.stop(left()))]), deadline);
        const closeBy = Math.max(deadline, Date.now()) + STOP_CLOSE_GRACE_MS;
        await Promise.all([
          // After the dispatchers: the outcomes of the last deliveries are written before disconnecting.
          step('outbox', outbox?.close(closeBy), closeBy),
          step('notify-dead-letters', notify?.close(), closeBy),
          step(
            'sinks',
            Promise.all(
              [...dispatchers.values()].map((d) =>
                d.sink.stop().catch((error) => {
                  logger.warn({ sink: d.sink.name, err: errorMessage(error) }, 'sink did not stop cleanly');
                }),
              ),
            ),
            closeBy,
          ),
          step('stats', stats.close(), closeBy),
        ]);
        // Last: /metrics and /readyz (503) stay up while the bridge drains. Closing it is local and
        // quick, so it gets a moment even when the steps above used up the grace.
        await step('http', http?.stop(), Math.max(closeBy, Date.now() + 200));
      })();
      return stopping;
    },
    readiness() {
      return readinessChecks.evaluate();
    },
    registerReadinessCheck(name, check) {
      return readinessChecks.register(name, check);
    },
  };
}
