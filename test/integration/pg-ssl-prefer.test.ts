import { readFileSync } from 'node:fs';
import net, { type AddressInfo } from 'node:net';
import { join } from 'node:path';
import tls from 'node:tls';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { databaseConnection } from '../../src/pg/connection.js';
import { preferSsl } from '../../src/pg/ssl-prefer.js';
import { serviceEnv } from '../support/services.js';

// sslmode=prefer (libpq's default, and so every command's): each connection asks the server for SSL
// and goes on in the clear when refused. Against the test PostgreSQL (SSL off) through node-postgres,
// and against small fake servers that say yes (TLS, a self-signed certificate from test/support/tls),
// no, or nonsense.

const TLS_DIR = join(import.meta.dirname, '..', 'support', 'tls');
const key = readFileSync(join(TLS_DIR, 'localhost.key'));
const cert = readFileSync(join(TLS_DIR, 'localhost.crt'));
const SSL_REQUEST = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);

const servers: net.Server[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => new Promise((resolve) => s.close(resolve))));
});

/**
 * A server that reads the SSLRequest, answers `answer`, then (after 'S' over TLS) hands the
 * conversation to `talk`. `seen` records what each connection sent first and whether it went on TLS.
 */
async function fakeServer(answer: string, talk: (socket: net.Socket) => void) {
  const seen: { request: Buffer; secure: boolean }[] = [];
  const server = net.createServer((socket) => {
    socket.once('data', (request: Buffer) => {
      const entry = { request, secure: false };
      seen.push(entry);
      socket.write(answer);
      if (answer !== 'S') return talk(socket);
      const secure = new tls.TLSSocket(socket, { isServer: true, key, cert });
      secure.on('secure', () => {
        entry.secure = true;
      });
      secure.on('error', () => {});
      talk(secure);
    });
    socket.on('error', () => {});
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as AddressInfo).port, seen };
}

const echo = (socket: net.Socket) => socket.on('data', (d: Buffer) => socket.write(d));

/** Connects a prefer stream to `port` and sends `text`; resolves with what comes back first. */
function roundTrip(port: number, text: string): Promise<string> {
  const stream = preferSsl({ rejectUnauthorized: false })() as ReturnType<ReturnType<typeof preferSsl>> & { connect(p: number, h: string): void };
  return new Promise((resolve, reject) => {
    stream.on('error', reject);
    stream.once('connect', () => stream.write(text));
    stream.once('data', (d: Buffer) => {
      resolve(d.toString());
      stream.destroy();
    });
    stream.connect(port, '127.0.0.1');
  });
}

/** A PostgreSQL that lets anyone in and then only says goodbye: AuthenticationOk, ReadyForQuery. */
function welcome(socket: net.Socket) {
  socket.once('data', () => {
    socket.write(Buffer.from([0x52, 0, 0, 0, 8, 0, 0, 0, 0])); // 'R' AuthenticationOk
    socket.write(Buffer.from([0x5a, 0, 0, 0, 5, 0x49])); // 'Z' ReadyForQuery (idle)
  });
}

describe('sslmode=prefer: SSL when the server offers it, in the clear when it does not', () => {
  it('a server that does SSL: the SSLRequest, then TLS (a self-signed certificate is fine, as with libpq)', async () => {
    const server = await fakeServer('S', echo);
    expect(await roundTrip(server.port, 'over tls')).toBe('over tls');
    expect(server.seen).toEqual([{ request: SSL_REQUEST, secure: true }]);
  });

  it('a server that does not: the same socket goes on in the clear', async () => {
    const server = await fakeServer('N', echo);
    expect(await roundTrip(server.port, 'in the clear')).toBe('in the clear');
    expect(server.seen).toEqual([{ request: SSL_REQUEST, secure: false }]);
  });

  it('any other answer is an error; so is a server that is not there', async () => {
    const server = await fakeServer('E', echo);
    await expect(roundTrip(server.port, 'x')).rejects.toThrow('There was an error establishing an SSL connection');
    const closed = await fakeServer('N', echo);
    await new Promise((resolve) => (servers.pop() as net.Server).close(resolve));
    await expect(roundTrip(closed.port, 'x')).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });

  it('node-postgres connects through it over TLS to a server that does SSL', async () => {
    const server = await fakeServer('S', welcome);
    const { config } = databaseConnection(`postgres://someone:pw@127.0.0.1:${server.port}/db`, {});
    const client = new pg.Client(config);
    await client.connect();
    await client.end();
    expect(server.seen).toEqual([{ request: SSL_REQUEST, secure: true }]);
  });

  it('node-postgres clients and pools reach the test PostgreSQL (no SSL) with the default sslmode, in the clear', async () => {
    const { config } = databaseConnection(serviceEnv().DATABASE_URL, {});
    expect(config.ssl).toBe(false);
    expect(typeof config.stream).toBe('function');
    const client = new pg.Client(config);
    await client.connect();
    try {
      const { rows } = await client.query<{ ssl: boolean }>('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()');
      expect(rows[0]?.ssl).toBe(false);
    } finally {
      await client.end();
    }
    const pool = new pg.Pool({ ...config, max: 3 });
    try {
      const answers = await Promise.all([1, 2, 3].map((n) => pool.query<{ n: number }>('SELECT $1::int AS n', [n])));
      expect(answers.map((a) => a.rows[0]?.n)).toEqual([1, 2, 3]);
    } finally {
      await pool.end();
    }
  });
});
