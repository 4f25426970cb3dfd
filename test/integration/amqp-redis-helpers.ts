import { randomBytes } from 'node:crypto';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Envelope } from '../../src/envelope.js';
import type { DispatchOptions } from '../../src/config.js';

/** Shared by the AMQP and Redis Streams integration tests. */

export const randomName = (prefix: string) => `${prefix}-${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;

/** A local TCP port nothing listens on (bound, then closed). */
export async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/**
 * A real TCP proxy in front of a real broker, so a test can cut the network (every open connection
 * is destroyed, as when a broker or a link dies) without stopping the broker other tests use.
 */
export interface TcpProxy {
  readonly port: number;
  /** Destroys every connection through the proxy; new ones are accepted again. */
  cut(): void;
  /** While refusing, new connections are closed at once (the broker "is down"). */
  refuse(on: boolean): void;
  readonly connections: number;
  close(): Promise<void>;
}

export async function createTcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  const open = new Set<Socket>();
  let refusing = false;
  const server: Server = createServer((client) => {
    if (refusing) {
      client.destroy();
      return;
    }
    const upstream = connect(target.port, target.host);
    open.add(client);
    open.add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      open.delete(client);
      open.delete(upstream);
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as { port: number }).port,
    cut() {
      for (const s of open) s.destroy();
      open.clear();
    },
    refuse(on) {
      refusing = on;
    },
    get connections() {
      return open.size / 2;
    },
    async close() {
      for (const s of open) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Row-change envelopes over `keys` keys; `seq` counts per key from 1, in the order given. */
export function rowChanges(count: number, keys: number, tag = randomName('rc')): Envelope[] {
  const perKey = new Map<number, number>();
  const out: Envelope[] = [];
  for (let i = 0; i < count; i++) {
    const k = i % keys;
    const seq = (perKey.get(k) ?? 0) + 1;
    perKey.set(k, seq);
    out.push({
      id: `${tag}-${i}`,
      source: 'table',
      channel: 'public.items',
      op: seq === 1 ? 'INSERT' : 'UPDATE',
      schema: 'public',
      table: 'items',
      key: String(k),
      new: { id: k, seq, i },
      old: null,
      at: new Date().toISOString(),
      txid: String(1000 + i),
    });
  }
  return out;
}

export interface Received {
  readonly id: string;
  readonly key: string;
  readonly seq: number;
}

/**
 * Checks what a consumer read against what was sent: every id present (duplicates allowed:
 * at-least-once), and per key the first copies of the events come in the order they were sent.
 * Returns the problems found (empty = good) and the number of duplicates.
 */
export function verifyDelivery(
  sent: readonly Envelope[],
  received: readonly Received[],
): { problems: string[]; duplicates: number; distinct: number; missing: string[] } {
  const problems: string[] = [];
  const seen = new Set<string>();
  const lastSeq = new Map<string, number>();
  let duplicates = 0;
  for (const r of received) {
    if (seen.has(r.id)) {
      duplicates++;
      continue;
    }
    seen.add(r.id);
    const last = lastSeq.get(r.key) ?? 0;
    if (r.seq <= last && problems.length < 20) problems.push(`key ${r.key}: seq ${r.seq} (${r.id}) arrived after seq ${last}`);
    lastSeq.set(r.key, Math.max(last, r.seq));
  }
  const missing = sent.filter((e) => !seen.has(e.id));
  if (missing.length > 0)
    problems.push(
      `${missing.length} of ${sent.length} missing, e.g. ${missing
        .slice(0, 5)
        .map((e) => e.id)
        .join(', ')}`,
    );
  const sentIds = new Set(sent.map((e) => e.id));
  const extra = [...seen].filter((id) => !sentIds.has(id));
  if (extra.length > 0) problems.push(`${extra.length} unexpected ids, e.g. ${extra.slice(0, 5).join(', ')}`);
  return { problems, duplicates, distinct: seen.size, missing: missing.map((e) => e.id) };
}

export function dispatchOptions(over: Partial<DispatchOptions> = {}): DispatchOptions {
  return {
    retry: { attempts: 1000, initialDelay: 50, maxDelay: 1_000 },
    concurrency: 8,
    batch: { size: 500, linger: 0 },
    maxQueued: 1_000_000,
    ...over,
  };
}

const servicesScript = fileURLToPath(new URL('../../scripts/services.sh', import.meta.url));

/** Runs scripts/services.sh (against $SIDEKICK_SERVICES_DIR, default the machine-wide state dir). */
export function services(...args: string[]): Promise<{ ms: number; output: string }> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    execFile('bash', [servicesScript, ...args], { timeout: 120_000, env: process.env }, (error, stdout, stderr) => {
      const output = `${stdout}${stderr}`;
      if (error) reject(new Error(`services.sh ${args.join(' ')} failed: ${error.message}\n${output}`));
      else resolve({ ms: Date.now() - started, output });
    });
  });
}

/** Resolves with `promise`, or rejects naming `what` after `ms` (so a broken sink fails fast, not at the test timeout). */
export function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}
