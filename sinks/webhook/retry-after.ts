/**
 * Parses an HTTP `Retry-After` header (RFC 9110 §10.2.3): either a number of seconds or an
 * HTTP-date. Returns the wait in milliseconds (never negative), or undefined when the header is
 * absent or unreadable — a malformed header must not turn into a zero-delay retry storm nor into an
 * error, so it is simply ignored and the normal backoff applies. Capping (by `retry.maxDelay`) is the
 * dispatcher's job.
 */
export function parseRetryAfter(value: string | readonly string[] | undefined, now: number = Date.now()): number | undefined {
  const text = (Array.isArray(value) ? value[0] : value) as string | undefined;
  if (text === undefined) return undefined;
  const trimmed = text.trim();
  if (trimmed === '') return undefined;
  if (/^\d+$/.test(trimmed)) {
    const seconds = Number(trimmed);
    return Number.isSafeInteger(seconds) ? seconds * 1000 : undefined;
  }
  // Only dates with a weekday or month name: Date.parse accepts far too much ("1.5", "-3").
  if (!/[A-Za-z]{3}/.test(trimmed)) return undefined;
  const at = Date.parse(trimmed);
  if (!Number.isFinite(at)) return undefined;
  return Math.max(0, at - now);
}
