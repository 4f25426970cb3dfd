import { sinkDefinitions } from '../../sinks/index.js';
import { createBridge, STOP_CLOSE_GRACE_MS } from '../bridge.js';
import { loadConfig, type Config } from '../config.js';
import { ConfigError } from '../errors.js';
import { chooseLogFormat, createLogger, type Logger } from '../logger.js';
import { createMetrics } from '../metrics.js';
import { waitForAbort, type CommandIO } from './io.js';

export function loadConfigFor(file: string, io: Pick<CommandIO, 'env'>): Config {
  return loadConfig(file, { env: io.env, sinks: sinkDefinitions });
}

const LEVELS = new Set(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']);

/**
 * The command's logger: level from the config's log.level, else LOG_LEVEL, else info; format from
 * log.format, else LOG_FORMAT (json | pretty | auto), else auto = pretty only when stderr is a
 * terminal (so files, pipes and log collectors always get JSON lines).
 */
export function loggerFor(config: Config | undefined, io: Pick<CommandIO, 'env' | 'stderr'>): Logger {
  const level = config?.log.level ?? io.env.LOG_LEVEL ?? 'info';
  if (!LEVELS.has(level)) throw new ConfigError(`LOG_LEVEL: unknown level "${level}" (use ${[...LEVELS].join(', ')})`);
  const isTTY = (io.stderr as { isTTY?: boolean }).isTTY === true;
  const format = chooseLogFormat(config?.log.format, io.env.LOG_FORMAT, isTTY);
  return createLogger({
    level,
    format,
    colorize: isTTY && !io.env.NO_COLOR,
    ...(io.stderr === process.stderr ? {} : { destination: io.stderr }),
  });
}

/** What the bridge runs with, for a debug line at start (secrets are removed by the logger). */
export function configSummary(config: Config): Record<string, unknown> {
  return {
    file: config.file,
    database: config.database,
    listen: config.listen,
    sinks: Object.fromEntries(config.sinks.map((s) => [s.name, { type: s.type, ...s.options, ...s.dispatch }])),
    routes: config.routes,
    http: config.http,
    shutdown: config.shutdown,
  };
}

async function totals(counter: { get(): Promise<{ values: readonly { value: number }[] }> }): Promise<number> {
  return (await counter.get()).values.reduce((sum, v) => sum + v.value, 0);
}

/**
 * `sidekick run`: the bridge, until the first SIGINT/SIGTERM; then it takes no new work, finishes
 * in-flight deliveries (up to shutdown.timeout), closes the sinks and returns 0. A broken config
 * throws (exit 1); a database or broker that is down is retried forever, never an exit. A second
 * signal is handled by cli.ts (exit 130 at once).
 */
export async function runCommand(options: { config: string }, io: CommandIO): Promise<number> {
  const config = loadConfigFor(options.config, io);
  const logger = loggerFor(config, io);
  const bridge = createBridge({
    config,
    logger,
    // The real process exports Node's process metrics too (CPU, memory, event loop lag, GC).
    metrics: createMetrics({ defaultMetrics: true }),
    ...(io.stdout === process.stdout ? {} : { stdout: io.stdout }),
  });
  logger.info({ config: config.file, sinks: config.sinks.map((s) => `${s.name}:${s.type}`) }, 'pg-sidekick starting');
  logger.debug({ effective: configSummary(config) }, 'effective config');
  // start() resolves once the sources are connected (the database is retried meanwhile) and rejects
  // only for what retrying cannot fix, such as the HTTP port being taken.
  const started = bridge.start().then(
    () => undefined,
    (error: unknown) => error ?? new Error('the bridge failed to start'),
  );
  const startError = await Promise.race([started, waitForAbort(io.signal).then(() => undefined)]);
  if (startError !== undefined) {
    await bridge.stop();
    throw startError;
  }
  await waitForAbort(io.signal);

  const inFlight = [...bridge.pipeline.dispatchers.values()].reduce((n, d) => n + d.size, 0);
  const reason = io.signal.reason instanceof Error ? io.signal.reason.message : String(io.signal.reason ?? 'stop');
  logger.info(
    { signal: reason, inFlight, timeoutMs: config.shutdown.timeout },
    'stopping: taking no new events, finishing in-flight deliveries (send the signal again to exit at once)',
  );
  // The bridge bounds its own stop (shutdown.timeout for in-flight work, STOP_CLOSE_GRACE_MS to
  // close connections); this guard only catches a stop that breaks that promise (a bug), so the
  // process still exits within the timeout plus about 2 s, whatever is down.
  const guardMs = config.shutdown.timeout + STOP_CLOSE_GRACE_MS + 500;
  let timer: NodeJS.Timeout | undefined;
  const finished = await Promise.race([
    bridge.stop().then(() => true),
    new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), guardMs);
    }),
  ]);
  clearTimeout(timer);
  const summary = {
    received: await totals(bridge.metrics.received),
    delivered: await totals(bridge.metrics.delivered),
    deadLettered: await totals(bridge.metrics.dead),
    dropped: await totals(bridge.metrics.dropped),
  };
  // Always the same last line, so an operator (or a test) sees that the process ended and how.
  if (!finished) {
    logger.error({ ...summary, clean: false, timeoutMs: guardMs }, 'stopped');
    return 1;
  }
  logger.info(summary, 'stopped');
  return 0;
}
