import type { Logger } from 'pino';
import { errorMessage } from './errors.js';

// Every wait of the bridge, in one place: a sleep that a signal cuts short, the jittered reconnect
// backoff, the "connect until it works" loop, and one timeout that a signal can also end. Each takes
// an AbortSignal where someone may want to stop waiting; timers are unref'd unless the caller says
// the wait is what keeps the process alive (a listener between two connections, a shutdown).

export interface TimerOptions {
  /** The timer keeps the process alive (default false: it does not hold the event loop open). */
  readonly keepAlive?: boolean;
}

/** Waits `ms`; resolves early, never rejects, when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal, options?: TimerOptions): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    if (!options?.keepAlive) timer.unref();
    function done() {
      signal?.removeEventListener('abort', done);
      clearTimeout(timer);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/**
 * The longest wait between two attempts to reach the database or a broker, for every connection of
 * the bridge (LISTEN, outbox drain, scheduler, a sink's start). Short on purpose: the wait after the
 * last failed attempt is what an outage costs on top of itself, and the bridge must be ready again
 * within about 5 s of the database accepting connections (issue 16: a 30 s cap made it ~20 s). One
 * attempt every 3 s per connection is no load on a database that is coming back.
 */
export const RECONNECT_MAX_MS = 3_000;

/**
 * The wait before reconnect attempt `attempt` (1, 2, …): 50 ms·e^attempt with ±15% jitter (so
 * that many bridges do not knock in step), never above `capMs` — at the cap the jitter only
 * shortens the wait. `random` returns [0, 1) (Math.random; injected by tests).
 */
export function reconnectDelay(attempt: number, capMs: number = RECONNECT_MAX_MS, random: () => number = Math.random): number {
  const base = Math.min(capMs, 50 * Math.exp(Math.min(Math.max(attempt, 0), 20)));
  return Math.min(capMs, Math.round(base * (0.85 + random() * 0.3)));
}

export interface RetryForeverOptions extends TimerOptions {
  /** Ends the retries: no attempt starts after it aborts, and the wait between two is cut short. */
  readonly signal: AbortSignal;
  /** Where each failure is logged, as `<what>; retrying` with `err`, `attempt` and `retryInMs`. */
  readonly logger?: Logger;
  /** What failed, in words: `cannot connect to the database`, `sink failed to start`. */
  readonly what: string;
  /** More fields for the log line (`{ sink: 'kafka' }`). */
  readonly fields?: Readonly<Record<string, unknown>>;
  /** The log level of a failure. Default error. */
  readonly level?: 'error' | 'warn';
  /** The longest wait (reconnectDelay's cap). Default RECONNECT_MAX_MS. */
  readonly maxDelayMs?: number;
  /** Hears each failure and the wait that follows it (after the log line), e.g. to report a state. */
  readonly onFailure?: (error: unknown, attempt: number, retryInMs: number) => void;
}

/**
 * Calls `fn(attempt)` with attempt 1, 2, … until it resolves, waiting reconnectDelay(attempt) after
 * each failure: the connect loops of the bridge (a database or broker that is not there yet is
 * never fatal). Resolves with what `fn` returned, or with undefined once `signal` aborts (then no
 * further attempt is made; one in progress is the caller's to cut, with the same signal).
 */
export async function retryForever<T>(options: RetryForeverOptions, fn: (attempt: number) => Promise<T>): Promise<T | undefined> {
  const { signal, logger, what } = options;
  const cap = options.maxDelayMs ?? RECONNECT_MAX_MS;
  for (let attempt = 1; !signal.aborted; attempt++) {
    try {
      return await fn(attempt);
    } catch (error) {
      if (signal.aborted) return undefined;
      const retryInMs = reconnectDelay(attempt, cap);
      logger?.[options.level ?? 'error']({ ...options.fields, err: errorMessage(error), attempt, retryInMs }, `${what}; retrying`);
      options.onFailure?.(error, attempt, retryInMs);
      await sleep(retryInMs, signal, options);
    }
  }
  return undefined;
}

export interface BoundOptions extends TimerOptions {
  /** Gives up after this many ms (none: no time limit). */
  readonly ms?: number;
  /** Gives up as soon as this aborts. */
  readonly signal?: AbortSignal;
  /** What to reject with when time is up. Default: an Error saying how long it waited. */
  readonly timedOut?: () => unknown;
  /** What to reject with when `signal` aborts. Default: the signal's reason. */
  readonly aborted?: () => unknown;
}

/**
 * Settles like `work`, unless `ms` pass or `signal` aborts first: then rejects (timedOut() /
 * aborted()). The work itself goes on — nothing here can cancel it; the caller stops waiting for it.
 * Leaves no timer or listener behind once settled.
 */
export function bounded<T>(work: PromiseLike<T>, options: BoundOptions): Promise<T> {
  const { ms, signal } = options;
  return new Promise<T>((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    const onAbort = () => finish(() => reject(options.aborted ? options.aborted() : signal?.reason));
    function finish(settle: () => void) {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      settle();
    }
    if (signal?.aborted) return onAbort();
    if (ms !== undefined) {
      timer = setTimeout(() => finish(() => reject(options.timedOut ? options.timedOut() : new Error(`no answer within ${ms} ms`))), Math.max(0, ms));
      if (!options.keepAlive) timer.unref();
    }
    signal?.addEventListener('abort', onAbort, { once: true });
    work.then(
      (v) => finish(() => resolve(v)),
      (e: unknown) => finish(() => reject(e)),
    );
  });
}

/** How a step that was given until a deadline ended. */
export type Settled = { readonly state: 'done' } | { readonly state: 'failed'; readonly error: unknown } | { readonly state: 'late' };

const DONE: Settled = Object.freeze({ state: 'done' });
const LATE: Settled = Object.freeze({ state: 'late' });

/**
 * Waits for `work` until the wall clock reaches `deadline` (ms since the epoch), and no longer: the
 * steps of a shutdown. The work itself goes on; the caller decides what a late step means — during
 * a shutdown, that the process exits without it. Never rejects: a failure is returned, so a
 * shutdown that logs it can go on with its next step.
 */
export async function settleBy(work: PromiseLike<unknown> | undefined, deadline: number, now: () => number = Date.now): Promise<Settled> {
  if (work === undefined) return DONE;
  try {
    // keepAlive: while a shutdown waits, this timer may be the only thing keeping the process alive
    // until it can say how the shutdown ended. It is cleared as soon as the work settles.
    await bounded(work, { ms: deadline - now(), keepAlive: true, timedOut: () => LATE });
    return DONE;
  } catch (error) {
    return error === LATE ? LATE : { state: 'failed', error };
  }
}
