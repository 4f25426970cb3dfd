import pg from 'pg';
import type { Logger } from 'pino';
import { errorMessage } from '../errors.js';
import { reconnectDelay, RECONNECT_MAX_MS, retryForever, sleep } from '../wait.js';
import { quoteIdent } from './quote.js';

export interface Notification {
  readonly channel: string;
  readonly payload: string;
  readonly processId: number;
}

export type ListenerEvent = { type: 'connected'; reconnect: boolean } | { type: 'disconnected'; error: Error; retryInMs: number };

export interface ListenerOptions {
  readonly connection: pg.ClientConfig;
  /** Channel names, LISTENed exactly as written (quoted: case-sensitive). */
  readonly channels: readonly string[];
  readonly onNotification: (n: Notification) => void;
  /** Connection state changes; `connected` with reconnect=true is the cue to catch up missed work. */
  readonly onEvent?: (event: ListenerEvent) => void;
  /**
   * Called with every new connection once it is authenticated and before it LISTENs, e.g. to take
   * notifications off its socket directly (`sidekick listen` does). Default: nothing.
   */
  readonly onClient?: (client: pg.Client) => void;
  readonly logger?: Logger;
  /** Reconnect backoff: 50ms·e^attempt, ±15% jitter, capped at this. Default RECONNECT_MAX_MS (3s). */
  readonly maxBackoffMs?: number;
  /** Heartbeat query interval; a failed heartbeat drops the connection and reconnects. Default 30s. */
  readonly heartbeatMs?: number;
  /** Fallback application_name shown in pg_stat_activity (an explicit one or PGAPPNAME wins). */
  readonly applicationName?: string;
}

export interface Listener {
  /** Connects and LISTENs; rejects if this *first* connection fails (no retry). */
  start(): Promise<void>;
  /** Closes the connection and stops reconnecting. Idempotent. */
  stop(): Promise<void>;
  /**
   * Stops reading from the server (the consumer cannot keep up): the server keeps the notifications
   * queued for us. Heartbeats are suspended meanwhile, so a long pause does not count as a dead connection.
   */
  pause(): void;
  /** Reads again after pause(). */
  resume(): void;
  readonly connected: boolean;
}

/** The socket node-postgres reads from (no public API exposes it; guarded where used). */
export function clientSocket(c: pg.Client): (NodeJS.ReadableStream & { destroy(): void }) | undefined {
  return (c as unknown as { connection?: { stream?: NodeJS.ReadableStream & { destroy(): void } } }).connection?.stream;
}

/**
 * A dedicated LISTEN connection that survives server restarts and pg_terminate_backend: on loss it
 * reconnects with capped, jittered backoff, LISTENs again and reports `connected` so the owner can
 * catch up whatever it missed (NOTIFY itself is not replayed).
 */
export function createListener(options: ListenerOptions): Listener {
  const { logger } = options;
  const maxBackoff = options.maxBackoffMs ?? RECONNECT_MAX_MS;
  const heartbeatMs = options.heartbeatMs ?? 30_000;
  const stopController = new AbortController();
  let client: pg.Client | undefined;
  // Connections being set up, so that stop() can cut a reconnect that hangs (no connect timeout by default).
  const connecting = new Set<pg.Client>();
  let connected = false;
  let paused = false;
  let heartbeat: NodeJS.Timeout | undefined;
  let loop: Promise<void> | undefined;
  let stopped: Promise<void> | undefined;

  async function connectOnce(): Promise<pg.Client> {
    const config = options.connection;
    const c = new pg.Client({
      ...config,
      keepAlive: true,
      fallback_application_name: config.fallback_application_name ?? options.applicationName ?? 'pg-sidekick',
    });
    // An 'error' without a listener would crash the process; the 'end' handler below decides.
    c.on('error', () => {});
    connecting.add(c);
    try {
      await c.connect();
      if (stopController.signal.aborted) throw new Error('listener stopped');
      options.onClient?.(c);
      // Before LISTEN: notifications may arrive in the same packet as LISTEN's own reply.
      c.on('notification', (m) => options.onNotification({ channel: m.channel, payload: m.payload ?? '', processId: m.processId }));
      if (options.channels.length > 0) {
        await c.query(options.channels.map((ch) => `LISTEN ${quoteIdent(ch)}`).join('; '));
      }
    } catch (error) {
      c.end().catch(() => {});
      throw error;
    } finally {
      connecting.delete(c);
    }
    return c;
  }

  function startHeartbeat(c: pg.Client): void {
    clearInterval(heartbeat);
    heartbeat = setInterval(() => {
      if (paused) return; // the reply could not be read anyway
      // A half-open TCP connection never says it is dead; a query that fails or hangs does.
      const limit = Math.max(heartbeatMs, 5_000);
      let due = Date.now() + limit;
      let timer: NodeJS.Timeout;
      const check = () => {
        // A timer that fires late means this process was stalled (or paused): the reply may be
        // sitting unread in the socket, so give it another period instead of killing the connection.
        const late = Date.now() - due > 1_000;
        if (paused || late) {
          due = Date.now() + limit;
          timer = setTimeout(check, limit);
          timer.unref();
        } else {
          logger?.warn({ timeoutMs: limit }, 'LISTEN heartbeat got no reply; dropping the connection');
          destroy(c);
        }
      };
      timer = setTimeout(check, limit);
      timer.unref();
      c.query('SELECT 1').then(
        () => clearTimeout(timer),
        () => {
          clearTimeout(timer);
          destroy(c);
        },
      );
    }, heartbeatMs);
    heartbeat.unref();
  }

  function watch(c: pg.Client): Promise<Error> {
    return new Promise((resolve) => {
      // The first error says why (the server's FATAL message); later ones only say the socket closed.
      let firstError: Error | undefined;
      c.on('error', (e) => {
        firstError ??= e;
      });
      c.once('end', () => resolve(firstError ?? new Error('connection closed')));
      startHeartbeat(c);
    });
  }

  function destroy(c: pg.Client): void {
    clientSocket(c)?.destroy();
  }

  function adopt(c: pg.Client): void {
    client = c;
    connected = true;
    if (paused) clientSocket(c)?.pause();
  }

  async function supervise(first: pg.Client): Promise<void> {
    let current: pg.Client | undefined = first;
    while (current && !stopController.signal.aborted) {
      adopt(current);
      const error = await watch(current);
      clearInterval(heartbeat);
      connected = false;
      client = undefined;
      if (stopController.signal.aborted) return;
      const retryInMs = reconnectDelay(0, maxBackoff);
      logger?.warn({ err: errorMessage(error), retryInMs }, 'LISTEN connection lost; reconnecting');
      options.onEvent?.({ type: 'disconnected', error, retryInMs });
      // keepAlive: unlike the other waits, between two connections this timer may be all there is.
      await sleep(retryInMs, stopController.signal, { keepAlive: true });
      current = await retryForever(
        {
          signal: stopController.signal,
          logger,
          what: 'reconnect failed',
          level: 'warn',
          maxDelayMs: maxBackoff,
          keepAlive: true,
          onFailure: (e, _attempt, wait) => options.onEvent?.({ type: 'disconnected', error: e as Error, retryInMs: wait }),
        },
        reconnect,
      );
    }
  }

  async function reconnect(): Promise<pg.Client | undefined> {
    const c = await connectOnce();
    if (stopController.signal.aborted) {
      await c.end().catch(() => {});
      return undefined;
    }
    logger?.info({ channels: options.channels.length }, 'LISTEN connection re-established');
    options.onEvent?.({ type: 'connected', reconnect: true });
    return c;
  }

  return {
    get connected() {
      return connected;
    },
    async start() {
      if (loop) throw new Error('listener already started');
      const first = await connectOnce();
      if (stopController.signal.aborted) {
        await first.end().catch(() => {});
        throw new Error('listener stopped before it was connected');
      }
      options.onEvent?.({ type: 'connected', reconnect: false });
      // Marks the connection as ours before start() returns, so pause()/stop() right after it apply.
      adopt(first);
      loop = supervise(first);
    },
    pause() {
      if (paused) return;
      paused = true;
      if (client) clientSocket(client)?.pause();
    },
    resume() {
      if (!paused) return;
      paused = false;
      if (client) clientSocket(client)?.resume();
    },
    stop() {
      stopped ??= (async () => {
        stopController.abort();
        clearInterval(heartbeat);
        // A reconnect attempt that hangs (a silent host) would hold up the stop: cut it. The first
        // connection belongs to start()'s caller, which decides how long to wait for it.
        if (loop) for (const c of connecting) destroy(c);
        const c = client;
        if (c) {
          // A paused socket would never see the server's end of the conversation.
          clientSocket(c)?.resume();
          const timer = setTimeout(() => destroy(c), 2_000);
          timer.unref();
          await c.end().catch(() => {});
          clearTimeout(timer);
        }
        await loop;
      })();
      return stopped;
    },
  };
}
