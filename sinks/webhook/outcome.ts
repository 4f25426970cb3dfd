import { errorCode, FatalError, networkFailure, OK, RetriableError, type ItemOutcome, type SidekickError } from '../../src/sink-kit.js';
import { parseRetryAfter } from './retry-after.js';

/** How much of an error response's body goes into the error message (and the dead letter). */
export const SNIPPET_BYTES = 512;
/** A response body (2xx or error) larger than this is not read to the end: the connection is dropped instead. */
export const DRAIN_LIMIT = 1024 * 1024;

/** Statuses where another attempt can succeed; every other 4xx is the request's own fault. */
export function isRetriableStatus(status: number): boolean {
  return status === 408 || status === 425 || status === 429 || status >= 500;
}

type Headers = Record<string, string | string[] | undefined>;

/** Maps an HTTP answer to an outcome (the body has been consumed by the caller). */
export function statusOutcome(status: number, headers: Headers, snippet: string, what: string): ItemOutcome {
  if (status >= 200 && status < 300) return OK;
  const detail = snippet === '' ? '' : `: ${snippet}`;
  if (status >= 300 && status < 400) {
    const location = String(headers.location ?? '(no Location header)').split('?')[0];
    return {
      ok: false,
      error: new FatalError(
        `HTTP_${status}`,
        `${what} answered HTTP ${status} (redirect to ${location}), not followed: fix the url, or set followRedirects (only 307/308 are followed: ` +
          `they keep the method and body)`,
      ),
    };
  }
  const message = `${what} answered HTTP ${status}${detail}`;
  if (isRetriableStatus(status)) {
    const retryAfterMs = parseRetryAfter(headers['retry-after']);
    return { ok: false, error: new RetriableError(`HTTP_${status}`, message, retryAfterMs === undefined ? {} : { retryAfterMs }) };
  }
  return { ok: false, error: new FatalError(`HTTP_${status}`, message) };
}

/** What the two timeouts of `timeout` (src/errors.ts NETWORK_ERRORS: `timeout`) mean, in words. */
const TIMEOUTS: Record<string, string> = {
  UND_ERR_HEADERS_TIMEOUT: 'no response within the headers timeout',
  UND_ERR_BODY_TIMEOUT: 'the response body stalled past the body timeout',
};
/** OpenSSL's X509 verification codes (UNABLE_TO_VERIFY_LEAF_SIGNATURE, CERT_HAS_EXPIRED…) and Node's ERR_TLS_* / ERR_SSL_*. */
const TLS_FAILURE = /CERT|CRL|SSL|TLS|ISSUER|SIGNATURE|^INVALID_CA$|^HOSTNAME_MISMATCH$|^PATH_LENGTH_EXCEEDED$|^INVALID_PURPOSE$/;
const INVALID_REQUEST =
  /^(UND_ERR_INVALID_ARG|UND_ERR_NOT_SUPPORTED|ERR_INVALID_ARG_|ERR_INVALID_CHAR|ERR_INVALID_HTTP_TOKEN|ERR_HTTP_INVALID_HEADER_VALUE)/;

function messageOf(error: unknown): string {
  if (error instanceof AggregateError && error.errors.length > 0) return messageOf(error.errors[0]);
  return error instanceof Error ? error.message || error.name : String(error);
}

/** Maps a failure to get any HTTP answer (refused, reset, timed out, TLS…) to an error. */
export function networkError(error: unknown, what: string): SidekickError {
  const code = errorCode(error);
  const message = messageOf(error);
  // The network codes are classified by the one table in src/errors.ts; only the words are HTTP's.
  const failure = networkFailure(code);
  if (failure === 'timeout') {
    return new RetriableError('HTTP_TIMEOUT', `${what}: ${(code && TIMEOUTS[code]) ?? 'no response in time'} (${message})`, { cause: error });
  }
  if (code !== undefined && failure === 'unreachable') {
    return new RetriableError(code, `${what}: cannot connect: ${message}`, { cause: error, unavailable: true });
  }
  if (code !== undefined && TLS_FAILURE.test(code)) {
    // The receiver is there but we cannot talk to it safely; nothing changes until someone fixes a
    // certificate, so treat it like an outage (the sink waits) rather than burning attempts.
    return new RetriableError(code, `${what}: TLS failed: ${message}`, { cause: error, unavailable: true });
  }
  if (code !== undefined && INVALID_REQUEST.test(code)) {
    return new FatalError('HTTP_INVALID_REQUEST', `${what}: the request could not be built: ${message}`, { cause: error });
  }
  return new RetriableError(code ?? 'HTTP_NETWORK', `${what}: ${message}`, { cause: error });
}
