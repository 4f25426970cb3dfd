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

const NETWORK_CODES = new Set([
  'ECONNRESET', 'ECONNREFUSED', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH',
  'EAI_AGAIN', 'ENOTFOUND', 'UND_ERR_SOCKET', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CLOSED',
]);

/**
 * Turns anything thrown by a sink into a SidekickError. Unknown errors are retriable (a transient
 * fault is the common case), except programmer errors, which are fatal.
 */
export function classifyError(error: unknown): SidekickError {
  if (error instanceof SidekickError) return error;
  if (error instanceof TypeError || error instanceof RangeError || error instanceof SyntaxError
    || error instanceof ReferenceError) {
    return new FatalError('SINK_BUG', `${error.name}: ${error.message}`, { cause: error });
  }
  const code = (error as { code?: unknown } | null)?.code;
  const message = error instanceof Error ? error.message : String(error);
  if (typeof code === 'string' && NETWORK_CODES.has(code)) {
    return new RetriableError(code, message, { cause: error, unavailable: code === 'ECONNREFUSED' });
  }
  return new RetriableError('SINK_ERROR', message, { cause: error });
}

export function errorMessage(error: unknown): string {
  if (error instanceof Error) return error.message || error.name;
  return String(error);
}
