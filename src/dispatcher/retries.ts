import pRetry from 'p-retry';
import type { Logger } from 'pino';
import type { DispatchOptions } from '../config.js';
import type { Envelope } from '../envelope.js';
import { classifyError, RetriableError, SidekickError } from '../errors.js';
import type { Metrics } from '../metrics.js';
import type { ItemOutcome } from '../sink.js';
import { sleep } from '../wait.js';
import type { Delivery } from './index.js';

type RetryPolicy = DispatchOptions['retry'];

/** An unreachable destination (connection refused): its failures do not use up an event's attempts. */
function unreachable(error: unknown): boolean {
  return error instanceof RetriableError && error.unavailable;
}

/**
 * Whether an event gets another attempt after `error`. `counted`: its failures so far that count
 * against `retry.attempts` (this one included); `born`: when it happened (ms, NaN if unknown).
 * A fatal error never; an unreachable destination does not use up attempts, but maxAge still ends it.
 */
export function mayRetry(error: unknown, counted: number, born: number, now: number, retry: RetryPolicy): boolean {
  if (!(error instanceof SidekickError) || !error.retriable) return false;
  if (counted >= retry.attempts) return false;
  if (retry.maxAge !== undefined && Number.isFinite(born) && now - born >= retry.maxAge) return false;
  return true;
}

/**
 * How long to wait for a Retry-After beyond the backoff p-retry waits anyway, before the next
 * attempt: the destination asked for `retryAfterMs` (capped by maxDelay); p-retry waits at least
 * initialDelay·2^retriesConsumed (capped) for an attempt that consumes a retry, none for one that
 * does not (unreachable). 0 when no retry follows (`counted` reached the attempts), or none was asked.
 */
export function retryAfterWait(error: unknown, retriesConsumed: number, counted: number, retry: RetryPolicy): number {
  if (!(error instanceof RetriableError) || !error.retryAfterMs || error.retryAfterMs <= 0) return 0;
  const asked = Math.min(error.retryAfterMs, retry.maxDelay);
  const covered = error.unavailable ? 0 : Math.min(retry.initialDelay * 2 ** Math.min(retriesConsumed, 30), retry.maxDelay);
  const last = (error.unavailable ? counted : counted + 1) >= retry.attempts;
  return asked > covered && !last ? asked - covered : 0;
}

/**
 * Retries one event whose first attempt failed retriably, until delivered or given up: exponential,
 * randomised backoff through p-retry, each retry queued ahead of every first attempt (`resubmit`),
 * a Retry-After honoured, the attempt budget and maxAge enforced. Stops with the dispatcher (signal).
 */
export function createRetries(params: {
  retry: RetryPolicy;
  signal: AbortSignal;
  now: () => number;
  sinkName: string;
  logger: Logger;
  metrics?: Metrics | undefined;
  /** Sends the event again, ahead of first attempts; resolves with that attempt's outcome. */
  resubmit: (order: number, envelope: Envelope) => Promise<ItemOutcome>;
}): (envelope: Envelope, order: number, first: ItemOutcome) => Promise<Delivery> {
  const { retry, signal, now, sinkName, logger, metrics, resubmit } = params;

  return async function retryEvent(envelope, order, first) {
    let attempts = 0;
    /** Failures that count against `retry.attempts` (an unreachable destination does not). */
    let counted = 0;
    let last: SidekickError | undefined;
    const born = Date.parse(envelope.at);
    try {
      await pRetry(
        async () => {
          attempts++;
          const outcome = attempts === 1 ? first : await resubmit(order, envelope);
          if (outcome.ok) return;
          last = outcome.error;
          metrics?.failed.inc({ sink: sinkName, retriable: String(outcome.error.retriable) });
          // A fatal error ends the retries at once; pRetry rethrows it because it is not retriable here.
          throw outcome.error;
        },
        {
          // The attempt budget is enforced in shouldRetry, where unreachable-destination failures are
          // exempt; maxAge bounds those instead.
          retries: Number.MAX_SAFE_INTEGER,
          factor: 2,
          minTimeout: retry.initialDelay,
          maxTimeout: retry.maxDelay,
          randomize: true,
          unref: true,
          signal,
          shouldConsumeRetry: ({ error }) => !unreachable(error),
          shouldRetry: ({ error }) => {
            if (error instanceof SidekickError && error.retriable && !unreachable(error)) counted++;
            if (!mayRetry(error, counted, born, now(), retry)) return false;
            metrics?.retried.inc({ sink: sinkName });
            logger.debug({ id: envelope.id, attempts, err: error.message }, 'delivery failed; will retry');
            return true;
          },
          onFailedAttempt: async ({ error, retriesConsumed }) => {
            // Honour Retry-After: the next attempt comes no sooner than asked.
            const wait = retryAfterWait(error, retriesConsumed, counted, retry);
            if (wait > 0) await sleep(wait, signal);
          },
        },
      );
      return { status: 'delivered', attempts };
    } catch (error) {
      if (signal.aborted) return { status: 'aborted', attempts };
      return { status: 'dead', attempts, error: last ?? classifyError(error) };
    }
  };
}
