// The services the chaos suite runs against. Shared ones come from scripts/services.sh (its env file);
// anything a scenario restarts is either private (a PostgreSQL or redis-server of its own, on a free
// port, in a temp dir) or, in the full run only, the shared RabbitMQ / the Kafka mock broker.
import { execFile, spawn } from 'node:child_process';
import { chownSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { kafkaControl, requireService, servicesEnv } from '../../bench/lib/services.mjs';
import { freePort, waitFor } from './util.mjs';

const run = promisify(execFile);
const PG_BIN = process.env.PG_BIN ?? '/usr/lib/postgresql/15/bin';
export const ROOT = new URL('../../', import.meta.url).pathname;

/** Addresses of the shared services (read afresh: the Kafka mock's port changes when it restarts). */
export function shared() {
  const env = servicesEnv();
  return {
    pg: requireService(env, 'DATABASE_URL'),
    redis: requireService(env, 'REDIS_URL'),
    get amqp() {
      return requireService(env, 'AMQP_URL');
    },
    get kafka() {
      return requireService(env, 'KAFKA_BROKERS');
    },
    kafkaCommand: (command) => kafkaControl(env, command),
  };
}

/** scripts/services.sh up|down <service>; resolves with the time it took. */
export async function servicesScript(action, service) {
  const started = Date.now();
  await run('bash', [join(ROOT, 'scripts', 'services.sh'), action, service], { cwd: ROOT, timeout: 120_000 });
  return Date.now() - started;
}

/**
 * A PostgreSQL 15 server of the scenario's own (initdb as the postgres user when root), so it can be
 * stopped, crashed and restarted without touching the shared one. fsync=off: it is a test server.
 */
export async function startPrivatePostgres() {
  const dir = mkdtempSync(join(tmpdir(), 'sk-chaos-pg-'));
  const data = join(dir, 'data');
  const asRoot = process.getuid?.() === 0;
  if (asRoot) {
    const uid = Number((await run('id', ['-u', 'postgres'])).stdout.trim());
    const gid = Number((await run('id', ['-g', 'postgres'])).stdout.trim());
    chownSync(dir, uid, gid);
  }
  const pg = (args) =>
    asRoot
      ? run('su', ['postgres', '-s', '/bin/sh', '-c', args.map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ')], { timeout: 60_000 })
      : run(args[0], args.slice(1), { timeout: 60_000 });
  const port = await freePort();
  await pg([`${PG_BIN}/initdb`, '-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync']);
  const options = `-c listen_addresses=127.0.0.1 -p ${port} -k ${dir} -c fsync=off -c max_connections=60`;
  const start = () => pg([`${PG_BIN}/pg_ctl`, '-D', data, '-l', join(dir, 'log'), '-w', '-o', options, 'start']);
  const stop = (mode) => pg([`${PG_BIN}/pg_ctl`, '-D', data, '-m', mode, '-w', 'stop']);
  await start();
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    /** `fast`: a clean shutdown (clients cut off, checkpoint); `immediate`: a crash, recovery at start. */
    stop,
    start,
    async restart(mode = 'fast') {
      await stop(mode);
      await start();
    },
    async destroy() {
      await stop('immediate').catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A redis-server of the scenario's own on a free port, with the append-only file fsynced on every
 * write (acknowledged = on disk), so a SIGKILL loses nothing Redis acknowledged and a restart on the
 * same port and directory brings the stream back.
 */
export async function startPrivateRedis() {
  const dir = mkdtempSync(join(tmpdir(), 'sk-chaos-redis-'));
  const port = await freePort();
  let child;
  const start = async () => {
    child = spawn(
      'redis-server',
      [
        '--bind',
        '127.0.0.1',
        '--port',
        String(port),
        '--dir',
        dir,
        '--save',
        '',
        '--appendonly',
        'yes',
        '--appendfsync',
        'always',
        '--protected-mode',
        'no',
      ],
      { stdio: 'ignore' },
    );
    const probe = new Redis({ port, host: '127.0.0.1', lazyConnect: true, retryStrategy: () => 20, maxRetriesPerRequest: 1 });
    probe.on('error', () => {});
    try {
      await waitFor(async () => (await probe.ping().catch(() => '')) === 'PONG', `redis-server on ${port}`, 10_000, 20);
    } finally {
      probe.disconnect();
    }
  };
  const kill = async () => {
    const dying = child;
    if (!dying || dying.exitCode !== null) return;
    const exited = new Promise((resolve) => dying.once('exit', resolve));
    dying.kill('SIGKILL');
    await exited;
  };
  await start();
  return {
    url: `redis://127.0.0.1:${port}`,
    kill,
    start,
    async destroy() {
      await kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
