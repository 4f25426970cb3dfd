// Where the test services are: the addresses written by scripts/services.sh (its env file),
// overridden by environment variables of the same name. Also a client for the Kafka mock
// broker's control port, which creates topics (the mock has no CreateTopics API).
import { readFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface ServiceEnv {
  /** postgres://postgres@127.0.0.1:55432/postgres */
  DATABASE_URL: string;
  /** redis://127.0.0.1:56379 */
  REDIS_URL: string;
  /** amqp://guest:guest@127.0.0.1:55672 */
  AMQP_URL: string;
  /** host:port of the Kafka-protocol broker (librdkafka's mock; the port changes on restart). */
  KAFKA_BROKERS: string;
  /** host:port of the mock broker's control port; absent when Kafka is provided another way. */
  KAFKA_CONTROL?: string;
}

export type ServiceName = 'pg' | 'redis' | 'rabbitmq' | 'kafka';

/** The variable that tells where each service is; global-setup skips starting what is set. */
export const SERVICE_ENV_KEY: Readonly<Record<ServiceName, keyof ServiceEnv>> = Object.freeze({
  pg: 'DATABASE_URL',
  redis: 'REDIS_URL',
  rabbitmq: 'AMQP_URL',
  kafka: 'KAFKA_BROKERS',
});

export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** The state dir of scripts/services.sh: $SIDEKICK_SERVICES_DIR or the machine's /var/tmp/pg-sidekick-services. */
export function servicesDir(): string {
  return process.env.SIDEKICK_SERVICES_DIR || '/var/tmp/pg-sidekick-services';
}

export function envFilePath(): string {
  return join(servicesDir(), 'env');
}

function readEnvFile(): Map<string, string> {
  const values = new Map<string, string>();
  let text: string;
  try {
    text = readFileSync(envFilePath(), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return values;
    throw err;
  }
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=');
    if (eq <= 0 || line.startsWith('#')) continue;
    values.set(line.slice(0, eq).trim(), line.slice(eq + 1).trim());
  }
  return values;
}

/**
 * The service addresses: each from process.env if set, else from the env file. Read afresh on
 * every call, so a test that restarted a service (the Kafka mock gets a new port) sees the new one.
 *
 * A required value that is nowhere to be found throws when it is *read* (with the command that
 * starts the service), so a test that needs only PostgreSQL works when only `pg` was started.
 */
export function serviceEnv(): ServiceEnv {
  const file = readEnvFile();
  const lookup = (key: keyof ServiceEnv): string | undefined => process.env[key] || file.get(key) || undefined;
  const env = {} as ServiceEnv;
  for (const [service, key] of Object.entries(SERVICE_ENV_KEY) as [ServiceName, keyof ServiceEnv][]) {
    const value = lookup(key);
    Object.defineProperty(env, key, {
      enumerable: true,
      get(): string {
        if (value === undefined) {
          throw new Error(`${key} is not set and not in ${envFilePath()}; start the service: scripts/services.sh up ${service}`);
        }
        return value;
      },
    });
  }
  const control = lookup('KAFKA_CONTROL');
  if (control !== undefined) env.KAFKA_CONTROL = control;
  return Object.freeze(env);
}

const TOPIC_NAME = /^[A-Za-z0-9._-]{1,249}$/;

/**
 * Creates a topic in the mock Kafka broker through its control port. Rejects if the topic
 * already exists (use a random name per test). Note that the mock also auto-creates any topic a
 * client asks metadata for (4 partitions) — create topics before any client touches them.
 */
export async function createKafkaTopic(name: string, partitions = 1): Promise<void> {
  if (!TOPIC_NAME.test(name) || name === '.' || name === '..') {
    throw new RangeError(`invalid Kafka topic name: ${JSON.stringify(name)}`);
  }
  if (!Number.isInteger(partitions) || partitions < 1 || partitions > 10_000) {
    throw new RangeError(`partitions must be an integer 1..10000, got ${partitions}`);
  }
  await kafkaMockCommand(`create ${name} ${partitions}`);
}

export interface KafkaMockCommandOptions {
  /** Default 5000 ms. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/**
 * Sends one line to the mock broker's control port and resolves with what follows "ok" (often
 * ""); rejects with the broker's "err …" message. Commands: ping, bootstrap, create TOPIC [N],
 * topic-error TOPIC ERROR, push-errors API ERROR…, broker-down [ID], broker-up [ID]
 * (see scripts/services.sh).
 */
export function kafkaMockCommand(command: string, options: KafkaMockCommandOptions = {}): Promise<string> {
  if (/[\r\n]/.test(command)) throw new TypeError('a control command is a single line');
  const address = serviceEnv().KAFKA_CONTROL;
  if (address === undefined) {
    return Promise.reject(new Error(`KAFKA_CONTROL is not set and not in ${envFilePath()}; start the mock: scripts/services.sh up kafka`));
  }
  const colon = address.lastIndexOf(':');
  const host = address.slice(0, colon);
  const port = Number(address.slice(colon + 1));
  if (colon <= 0 || !Number.isInteger(port)) {
    return Promise.reject(new Error(`KAFKA_CONTROL is not host:port: ${address}`));
  }
  const { timeoutMs = 5000, signal } = options;
  signal?.throwIfAborted();

  return new Promise<string>((resolve, reject) => {
    const socket = createConnection({ host, port });
    let buffered = '';
    let settled = false;
    const finish = (err: Error | undefined, reply?: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      socket.destroy();
      if (err) reject(err);
      else resolve(reply ?? '');
    };
    const onAbort = (): void => finish(signal?.reason instanceof Error ? signal.reason : new Error('aborted'));
    const timer = setTimeout(() => finish(new Error(`kafka mock control ${address}: no answer to "${command}" within ${timeoutMs} ms`)), timeoutMs);
    timer.unref();
    signal?.addEventListener('abort', onAbort, { once: true });

    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write(`${command}\n`));
    socket.on('data', (chunk: string) => {
      buffered += chunk;
      const nl = buffered.indexOf('\n');
      if (nl < 0) return;
      const line = buffered.slice(0, nl);
      if (line === 'ok' || line.startsWith('ok ')) finish(undefined, line.slice(3));
      else finish(new Error(`kafka mock: "${command}" failed: ${line.replace(/^err /, '')}`));
    });
    socket.on('error', (err) =>
      finish(new Error(`kafka mock control ${address} unreachable (scripts/services.sh up kafka): ${err.message}`, { cause: err })),
    );
    socket.on('close', () => finish(new Error(`kafka mock control ${address} closed the connection without answering`)));
  });
}
