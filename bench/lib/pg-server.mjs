// A PostgreSQL server of the benchmark's own (not the shared test server): its own data directory,
// its own settings (fsync on unless asked otherwise), so quoted numbers mean what they say.
// initdb refuses root: as root it runs as the `postgres` system user.
import { execFile } from 'node:child_process';
import { chownSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
export const PG_BIN = process.env.PG_BIN ?? '/usr/lib/postgresql/15/bin';

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/**
 * Starts a server; `settings` are postgres -c options. Returns { url, host, port, settings, stop() },
 * and for benchmarks that run the server's binaries themselves: `data` (the data directory),
 * `halt()` (stops the server, keeping the directory) and `shell(command)` (runs a shell command as
 * the server's system user; resolves { stdout, stderr }).
 */
export async function startServer(settings = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'sk-bench-pg-'));
  const data = join(dir, 'data');
  const asRoot = process.getuid?.() === 0;
  if (asRoot) {
    const uid = Number((await run('id', ['-u', 'postgres'])).stdout.trim());
    const gid = Number((await run('id', ['-g', 'postgres'])).stdout.trim());
    chownSync(dir, uid, gid);
  }
  const exec = (args) =>
    asRoot ? run('su', ['postgres', '-s', '/bin/sh', '-c', args.map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ')]) : run(args[0], args.slice(1));
  const port = await freePort();
  await exec([`${PG_BIN}/initdb`, '-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8']);
  const all = { listen_addresses: '127.0.0.1', port, unix_socket_directories: dir, max_connections: 100, shared_buffers: '512MB', ...settings };
  const options = Object.entries(all)
    .map(([k, v]) => `-c ${k}=${v}`)
    .join(' ');
  await exec([`${PG_BIN}/pg_ctl`, '-D', data, '-l', join(dir, 'log'), '-w', '-o', options, 'start']);
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    host: '127.0.0.1',
    port,
    settings: all,
    data,
    async halt() {
      await exec([`${PG_BIN}/pg_ctl`, '-D', data, '-m', 'fast', '-w', 'stop']);
    },
    shell(command) {
      return asRoot
        ? run('su', ['postgres', '-s', '/bin/sh', '-c', command], { maxBuffer: 64 << 20 })
        : run('/bin/sh', ['-c', command], { maxBuffer: 64 << 20 });
    },
    async stop() {
      await exec([`${PG_BIN}/pg_ctl`, '-D', data, '-m', 'fast', '-w', 'stop']).catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
