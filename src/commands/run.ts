import { sinkDefinitions } from '../../sinks/index.js';
import { createBridge } from '../bridge.js';
import { loadConfig, type Config } from '../config.js';
import { createLogger, type Logger } from '../logger.js';
import { waitForAbort, type CommandIO } from './io.js';

export function loadConfigFor(file: string, io: Pick<CommandIO, 'env'>): Config {
  return loadConfig(file, { env: io.env, sinks: sinkDefinitions });
}

export function loggerFor(config: Config | undefined, io: Pick<CommandIO, 'env' | 'stderr'>): Logger {
  return createLogger({ level: config?.log.level ?? io.env.LOG_LEVEL ?? 'info', destination: io.stderr === process.stderr ? undefined : io.stderr });
}

/** `sidekick run`: the bridge, until the first SIGINT/SIGTERM. A broken config throws (exit 1). */
export async function runCommand(options: { config: string }, io: CommandIO): Promise<number> {
  const config = loadConfigFor(options.config, io);
  const logger = loggerFor(config, io);
  const bridge = createBridge({ config, logger, ...(io.stdout === process.stdout ? {} : { stdout: io.stdout }) });
  logger.info({ config: config.file, sinks: config.sinks.map((s) => `${s.name}:${s.type}`) }, 'pg-sidekick starting');
  const starting = bridge.start();
  await Promise.race([starting, waitForAbort(io.signal)]);
  await waitForAbort(io.signal);
  logger.info('stopping: finishing in-flight deliveries');
  await bridge.stop();
  logger.info('stopped');
  return 0;
}
