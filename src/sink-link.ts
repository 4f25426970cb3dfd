import { RetriableError } from './errors.js';
import { bounded } from './wait.js';

// The one reconnect helper of the broker sinks (Kafka, AMQP, Redis) and the later sink, after
// Redpanda Connect's outputs: a send that finds no usable connection fails as "not connected"
// (RetriableError, `unavailable`), and the next send connects again. There is no retry loop here
// and no timer: the dispatcher's sink-wide backoff decides when the next send — and so the next
// connect attempt — comes. A client library's own background reconnect is switched off where it
// has one, so that there is one engine, not two.

export interface LinkOptions<L> {
  /**
   * Opens a new link (a connection, a producer, a channel…), ready to use, or rejects with the error
   * a send should report (a RetriableError with `unavailable: true` when the destination cannot be
   * reached). Called only when there is no usable link and no attempt in flight. A connect that
   * could hang must bound itself (a connect timeout).
   */
  readonly connect: () => Promise<L>;
  /**
   * Closes a link no longer handed out: a retired one once its last use has ended, the current one
   * at close(), one that connected after close(). Called at most once per link; a rejection is
   * ignored (log it inside if it matters).
   */
  readonly close: (link: L) => Promise<void>;
  /** True when the link can no longer be used although nobody retired it yet (e.g. a client's status). */
  readonly isBroken?: (link: L) => boolean;
  /** Hears a link being retired, once per link, with the reason given to retire(): for a log line. */
  readonly onRetire?: (link: L, reason: unknown) => void;
  /** Hears a connect that worked, with how many attempts in a row had failed before it. */
  readonly onConnected?: (link: L, failedBefore: number) => void;
  /** Hears a connect that failed, with how many attempts in a row have failed now (1 = the first). */
  readonly onConnectFailed?: (error: unknown, failures: number) => void;
  /** What get() rejects with once close() was called. Default: RetriableError `STOPPED` (`unavailable`). */
  readonly closedError?: () => unknown;
  /** What get(signal) rejects with when the signal aborts first. Default: RetriableError `ABORTED`. */
  readonly abortedError?: (signal: AbortSignal) => unknown;
}

export interface Link<L> {
  /**
   * The usable link; connects first when there is none (lazily: nothing connects before the first
   * get). Concurrent callers share one attempt; a failed attempt is forgotten, so the next get tries
   * again. `signal` only stops this caller's wait: the attempt goes on for the others.
   */
  get(signal?: AbortSignal): Promise<L>;
  /**
   * Counts `work` as using `link`: a link retired while work runs on it is closed only once the last
   * such work has settled (requests on the wire are not cut by another send's failure).
   */
  use<T>(link: L, work: () => Promise<T>): Promise<T>;
  /**
   * Stops handing `link` out (the connection broke, or the library can no longer recover it): the
   * next get connects a new one. Closes it now if nothing uses it, else after its last use. Returns
   * false when the link was retired already or was never handed out by this helper.
   */
  retire(link: L, reason?: unknown): boolean;
  /** The link get() would hand out now without connecting, if any. */
  readonly current: L | undefined;
  /**
   * Ends the helper: get() rejects from now on, an attempt in flight is waited for (and its link
   * closed), the current link is closed. It does not wait for work in use(): a sink that wants its
   * requests to finish waits for them first (or lets its `close` wait for them). Idempotent.
   */
  close(): Promise<void>;
}

/** Creates the reconnect helper of one sink; see Link and LinkOptions. */
export function createLink<L extends object>(options: LinkOptions<L>): Link<L> {
  let current: L | undefined;
  let connecting: Promise<L> | undefined;
  let closing: Promise<void> | undefined;
  let failures = 0;
  /** Every link connect() produced (so retire() ignores strangers); closed links leave `uses`. */
  const known = new WeakSet<L>();
  const retired = new WeakSet<L>();
  const closed = new WeakSet<L>();
  const uses = new Map<L, number>();

  function closeOnce(link: L): Promise<void> {
    if (closed.has(link)) return Promise.resolve();
    closed.add(link);
    uses.delete(link);
    // A close callback that throws synchronously is a rejection like any other.
    return Promise.resolve()
      .then(() => options.close(link))
      .catch(() => {});
  }

  function retire(link: L, reason?: unknown): boolean {
    if (!known.has(link) || retired.has(link)) return false;
    retired.add(link);
    if (current === link) current = undefined;
    options.onRetire?.(link, reason);
    if ((uses.get(link) ?? 0) === 0) void closeOnce(link);
    return true;
  }

  function attempt(): Promise<L> {
    // `.then`: connect() runs after `connecting` is set, so even a synchronous throw clears it.
    const pending: Promise<L> = Promise.resolve()
      .then(() => options.connect())
      .then(
        (link) => {
          if (connecting === pending) connecting = undefined;
          if (closing) {
            void closeOnce(link);
            throw closedError();
          }
          known.add(link);
          current = link;
          const failedBefore = failures;
          failures = 0;
          options.onConnected?.(link, failedBefore);
          return link;
        },
        (error: unknown) => {
          if (connecting === pending) connecting = undefined;
          failures++;
          options.onConnectFailed?.(error, failures);
          throw error;
        },
      );
    return pending;
  }

  function closedError(): unknown {
    return options.closedError ? options.closedError() : new RetriableError('STOPPED', 'the sink is stopped', { unavailable: true });
  }

  function get(signal?: AbortSignal): Promise<L> {
    if (closing) return Promise.reject(closedError());
    if (current !== undefined && options.isBroken?.(current)) retire(current, 'broken');
    if (current !== undefined) return Promise.resolve(current);
    connecting ??= attempt();
    if (!signal) return connecting;
    return bounded(connecting, {
      signal,
      aborted: () =>
        options.abortedError ? options.abortedError(signal) : new RetriableError('ABORTED', 'gave up waiting for the connection: aborted'),
    });
  }

  async function use<T>(link: L, work: () => Promise<T>): Promise<T> {
    uses.set(link, (uses.get(link) ?? 0) + 1);
    try {
      return await work();
    } finally {
      const left = (uses.get(link) ?? 1) - 1;
      if (left > 0) uses.set(link, left);
      else {
        uses.delete(link);
        if (retired.has(link)) void closeOnce(link);
      }
    }
  }

  return {
    get,
    use,
    retire,
    get current() {
      return current;
    },
    close() {
      closing ??= (async () => {
        // An attempt in flight closes its own link when it lands (see attempt()).
        await connecting?.catch(() => undefined);
        const link = current;
        current = undefined;
        if (link !== undefined) {
          retired.add(link);
          await closeOnce(link);
        }
      })();
      return closing;
    },
  };
}
