import pg from 'pg';
import type { Logger } from 'pino';
import { sleep } from '../dispatcher.js';
import { errorMessage } from '../errors.js';

export interface Notification {
  readonly channel: string;
  readonly payload: string;
  readonly processId: number;
}

export type ListenerEvent =
  | { type: 'connected'; reconnect: boolean }
  | { type: 'disconnected'; error: Error; retryInMs: number };

export interface ListenerOptions {
  readonly connection: pg.ClientConfig;
  /** Channel names, LISTENed exactly as written (quoted: case-sensitive). */
  readonly channels: readonly string[];
  readonly onNotification: (n: Notification) => void;
  /** Connection state changes; `connected` with reconnect=true is the cue to catch up missed work. */
  readonly onEvent?: (event: ListenerEvent) => void;
  readonly logger?: Logger;
  /** Reconnect backoff: 50ms·e^attempt, capped at this, ±15% jitter. Default 30s. */
  readonly maxBackoffMs?: number;
  /** Heartbeat query interval; a failed heartbeat drops the connection and reconnects. Default 30s. */
  readonly heartbeatMs?: number;
  /** application_name shown in pg_stat_activity. */
  readonly applicationName?: string;
}

export interface Listener {
  /** Connects and LISTENs; rejects if this *first* connection fails (no retry). */
  start(): Promise<void>;
  /** Closes the connection and stops reconnecting. Idempotent. */
  stop(): Promise<void>;
  readonly connected: boolean;
}

export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

export function reconnectDelay(attempt: number, capMs: number): number {
  const base = Math.min(capMs, 50 * Math.exp(Math.min(attempt, 20)));
  return Math.round(base * (0.85 + Math.random() * 0.3));
}

/**
 * A dedicated LISTEN connection that survives server restarts and pg_terminate_backend: on loss it
 * reconnects with capped, jittered backoff, LISTENs again and reports `connected` so the owner can
 * catch up whatever it missed (NOTIFY itself is not replayed).
 */
export function createListener(options: ListenerOptions): Listener {
  const { logger } = options;
  const maxBackoff = options.maxBackoffMs ?? 30_000;
  const heartbeatMs = options.heartbeatMs ?? 30_000;
  const stopController = new AbortController();
  let client: pg.Client | undefined;
  let connected = false;
  let heartbeat: NodeJS.Timeout | undefined;
  let loop: Promise<void> | undefined;
  let stopped: Promise<void> | undefined;

  async function connectOnce(): Promise<pg.Client> {
    const c = new pg.Client({ ...options.connection, keepAlive: true, application_name: options.applicationName ?? 'pg-sidekick' });
    // An 'error' without a listener would crash the process; the 'end' handler below decides.
    c.on('error', () => {});
    try {
      await c.connect();
      if (options.channels.length > 0) {
        await c.query(options.channels.map((ch) => `LISTEN ${quoteIdent(ch)}`).join('; '));
      }
    } catch (error) {
      c.end().catch(() => {});
      throw error;
    }
    c.on('notification', (m) => options.onNotification({ channel: m.channel, payload: m.payload ?? '', processId: m.processId }));
    return c;
  }

  function watch(c: pg.Client): Promise<Error> {
    return new Promise((resolve) => {
      let lastError: Error | undefined;
      c.on('error', (e) => { lastError = e; });
      c.once('end', () => resolve(lastError ?? new Error('connection closed')));
      heartbeat = setInterval(() => {
        // A half-open TCP connection never says it is dead; a query that fails or hangs does.
        const timer = setTimeout(() => destroy(c), Math.max(heartbeatMs, 5_000));
        c.query('SELECT 1').then(() => clearTimeout(timer), () => { clearTimeout(timer); destroy(c); });
      }, heartbeatMs);
      heartbeat.unref();
    });
  }

  function destroy(c: pg.Client): void {
    (c as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
  }

  async function supervise(first: pg.Client): Promise<void> {
    let current: pg.Client | undefined = first;
    let attempt = 0;
    while (!stopController.signal.aborted) {
      if (current) {
        client = current;
        connected = true;
        const error = await watch(current);
        clearInterval(heartbeat);
        connected = false;
        client = undefined;
        current = undefined;
        if (stopController.signal.aborted) return;
        attempt = 0;
        const retryInMs = reconnectDelay(attempt, maxBackoff);
        logger?.warn({ err: errorMessage(error), retryInMs }, 'LISTEN connection lost; reconnecting');
        options.onEvent?.({ type: 'disconnected', error, retryInMs });
        await sleep(retryInMs, stopController.signal);
      }
      if (stopController.signal.aborted) return;
      try {
        current = await connectOnce();
        if (stopController.signal.aborted) { await current.end().catch(() => {}); return; }
        logger?.info({ channels: options.channels.length }, 'LISTEN connection re-established');
        options.onEvent?.({ type: 'connected', reconnect: true });
      } catch (error) {
        attempt++;
        const retryInMs = reconnectDelay(attempt, maxBackoff);
        logger?.warn({ err: errorMessage(error), attempt, retryInMs }, 'reconnect failed; retrying');
        options.onEvent?.({ type: 'disconnected', error: error as Error, retryInMs });
        await sleep(retryInMs, stopController.signal);
      }
    }
  }

  return {
    get connected() { return connected; },
    async start() {
      if (loop) throw new Error('listener already started');
      const first = await connectOnce();
      options.onEvent?.({ type: 'connected', reconnect: false });
      loop = supervise(first);
    },
    stop() {
      stopped ??= (async () => {
        stopController.abort();
        clearInterval(heartbeat);
        const c = client;
        if (c) await c.end().catch(() => {});
        await loop;
      })();
      return stopped;
    },
  };
}
