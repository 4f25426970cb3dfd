/**
 * The error taxonomy. Every error pg-sidekick raises on purpose is a SidekickError with a stable
 * `code`; `retriable` tells the dispatcher whether another attempt can succeed. Programmer errors
 * (TypeError, RangeError, …) are never retried: another attempt would fail the same way.
 */
export class SidekickError extends Error {
  readonly code: string;
  readonly retriable: boolean;
  constructor(code: string, message: string, options: { retriable?: boolean; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.retriable = options.retriable ?? false;
  }
}

/** A config file or option that cannot be used; names the file and key path. Never retried. */
export class ConfigError extends SidekickError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('CONFIG_INVALID', message, { retriable: false, ...options });
  }
}

export interface RetriableOptions {
  cause?: unknown;
  /** The peer asked us to wait at least this long (HTTP Retry-After). */
  retryAfterMs?: number;
  /**
   * The destination is not reachable at all (connection refused, broker down). Such a failure does not
   * use up the event's attempts: the whole sink backs off instead, until `retry.maxAge` runs out.
   */
  unavailable?: boolean;
}

/** Another attempt may succeed: 5xx, 408, 429, a reset connection, a broker that is not there. */
export class RetriableError extends SidekickError {
  readonly retryAfterMs: number | undefined;
  readonly unavailable: boolean;
  constructor(code: string, message: string, options: RetriableOptions = {}) {
    super(code, message, { retriable: true, cause: options.cause });
    this.retryAfterMs = options.retryAfterMs;
    this.unavailable = options.unavailable ?? false;
  }
}

/** Another attempt would fail the same way (4xx, serialization, a missing topic): dead-letter it. */
export class FatalError extends SidekickError {
  constructor(code: string, message: string, options: { cause?: unknown } = {}) {
    super(code, message, { retriable: false, ...options });
  }
}

/**
 * What a network failure says about the destination, by error code: the one table every sink and
 * classifyError read (the webhook's outcome mapping puts its own words and codes on top).
 *
 * - `unreachable`: no connection could be made (refused, no such host, no route, connect timeout).
 *   Nothing was sent; the destination is not there: `unavailable`, the sink backs off as a whole
 *   without using up the events' attempts.
 * - `timeout`: connected, but the answer did not come in time. The peer may have the request.
 * - `lost`: the connection broke during the exchange (reset, broken pipe, aborted, closed). The peer
 *   may have the request. ETIMEDOUT is here: Node reports it for a socket whose peer stopped
 *   answering (keep-alive or retransmission timeout) as well as for a connect, so it cannot say which.
 *
 * `timeout` and `lost` are retriable and use up an attempt: another attempt may succeed, and the
 * destination did answer before.
 */
export type NetworkFailure = 'unreachable' | 'timeout' | 'lost';

export const NETWORK_ERRORS: Readonly<Record<string, NetworkFailure>> = Object.freeze({
  ECONNREFUSED: 'unreachable',
  ENOTFOUND: 'unreachable',
  EAI_AGAIN: 'unreachable',
  EHOSTUNREACH: 'unreachable',
  ENETUNREACH: 'unreachable',
  EHOSTDOWN: 'unreachable',
  ENETDOWN: 'unreachable',
  UND_ERR_CONNECT_TIMEOUT: 'unreachable',
  UND_ERR_HEADERS_TIMEOUT: 'timeout',
  UND_ERR_BODY_TIMEOUT: 'timeout',
  ECONNRESET: 'lost',
  ECONNABORTED: 'lost',
  EPIPE: 'lost',
  ETIMEDOUT: 'lost',
  UND_ERR_SOCKET: 'lost',
  UND_ERR_CLOSED: 'lost',
});

/** The table's verdict on a code (undefined: not a network failure the table knows). */
export function networkFailure(code: string | undefined): NetworkFailure | undefined {
  return code !== undefined && Object.hasOwn(NETWORK_ERRORS, code) ? NETWORK_ERRORS[code] : undefined;
}

/**
 * The first string `code` of an error, looking through what wraps it: `cause` (undici, kafkajs) and
 * an AggregateError's first error (Node's happy-eyeballs connect tries several addresses).
 */
export function errorCode(error: unknown): string | undefined {
  for (let e: unknown = error, depth = 0; e && depth < 4; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    const inner = (e as { errors?: unknown[] }).errors;
    e = Array.isArray(inner) && inner.length > 0 ? inner[0] : (e as { cause?: unknown }).cause;
  }
  return undefined;
}

/**
 * Turns anything thrown by a sink into a SidekickError. Unknown errors are retriable (a transient
 * fault is the common case), except programmer errors, which are fatal. A network failure keeps its
 * code and is `unavailable` when the table says the destination could not be reached at all.
 */
export function classifyError(error: unknown): SidekickError {
  if (error instanceof SidekickError) return error;
  if (error instanceof TypeError || error instanceof RangeError || error instanceof SyntaxError || error instanceof ReferenceError) {
    return new FatalError('SINK_BUG', `${error.name}: ${error.message}`, { cause: error });
  }
  const code = errorCode(error);
  const failure = networkFailure(code);
  const message = error instanceof Error ? error.message : String(error);
  if (code !== undefined && failure !== undefined) {
    return new RetriableError(code, message, { cause: error, unavailable: failure === 'unreachable' });
  }
  return new RetriableError('SINK_ERROR', message, { cause: error });
}

export function errorMessage(error: unknown): string {
  if (error instanceof Error) return error.message || error.name;
  return String(error);
}
