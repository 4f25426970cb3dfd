import { RetriableError, type SidekickError } from '../errors.js';
import type { ItemOutcome } from '../sink.js';

/**
 * Failed batches in a row (no success between them) before the whole sink backs off. An isolated
 * failure is the event's own business (its retry backs off); a streak means the destination is down.
 * An unreachable destination (connection refused) needs no streak to tell.
 */
export const FAILING_STREAK = 3;

/** What one batch's outcomes changed for the sink as a whole (for the caller to log). */
export type CircuitDecision =
  /** Nothing to report: the sink was fine and still is, or one more failure short of a pause. */
  | { readonly kind: 'steady' }
  /** The first success after `failures` pauses: full concurrency again. */
  | { readonly kind: 'recovered'; readonly failures: number }
  /**
   * The destination is failing as a whole: nothing is sent for about `backoffMs` (jittered), then
   * one batch at a time probes it. `failures`: pauses in a row; `askedMs`: the longest Retry-After
   * of the batch (capped); `error`: the batch's first error.
   */
  | { readonly kind: 'paused'; readonly failures: number; readonly backoffMs: number; readonly askedMs: number; readonly error: SidekickError };

export interface CircuitOptions {
  /** send() calls at once while the sink is healthy. */
  readonly concurrency: number;
  /** The first pause (retry.initialDelay); each pause in a row doubles it. */
  readonly initialDelay: number;
  /** The longest pause, and the cap of a Retry-After (retry.maxDelay). */
  readonly maxDelay: number;
  /** [0, 1), for the ±15% jitter of a pause. Default Math.random. */
  readonly random?: () => number;
}

/**
 * The sink-wide circuit of one dispatcher, as pure state: no timers, no I/O; the clock is passed in.
 * While every batch fails retriably, the sink pauses (exponential, jittered, capped) and then lets
 * one batch at a time probe the destination (half-open); the first success closes it again. A
 * Retry-After holds the whole sink (a rate limit or maintenance speaks for the destination), and a
 * success elsewhere does not cancel it.
 */
export interface Circuit {
  /** send() calls allowed at once: 1 while probing, else `concurrency`. */
  limit(): number;
  /** Nothing may be sent before this time (ms since the epoch; 0 or past: send). */
  heldUntil(): number;
  /** Pass it with a batch when it is sent, and back to onBatchResult() with its outcomes. */
  generation(): number;
  /** Takes in one batch's outcomes (`sentIn`: generation() when it was sent) and says what changed. */
  onBatchResult(outcomes: readonly ItemOutcome[], now: number, sentIn?: number): CircuitDecision;
}

const STEADY: CircuitDecision = Object.freeze({ kind: 'steady' });

export function createCircuit(options: CircuitOptions): Circuit {
  const { concurrency, initialDelay, maxDelay } = options;
  const random = options.random ?? Math.random;
  /** Pauses in a row; > 0 while the sink is failing as a whole (probing one batch at a time). */
  let consecutiveFailures = 0;
  /** Batches in a row that failed retriably, with no success in between. */
  let failStreak = 0;
  let pausedUntil = 0;
  /** Until when the destination asked us to wait (Retry-After). */
  let askedUntil = 0;
  /**
   * Bumped each time the pause grows. A batch sent before the latest bump that fails too is the
   * same outage seen again (32 requests in flight all fail at once), not a new failed probe: it
   * must not grow the pause further.
   */
  let generation = 0;

  return {
    limit: () => (consecutiveFailures > 0 ? 1 : concurrency),
    heldUntil: () => Math.max(pausedUntil, askedUntil),
    generation: () => generation,
    onBatchResult(outcomes, now, sentIn = generation) {
      // One pass: any success; all failed retriably; all unreachable; the longest Retry-After.
      let anyOk = false;
      let allRetriable = true;
      let allUnreachable = true;
      let asked = 0;
      for (const o of outcomes) {
        if (o.ok) {
          anyOk = true;
          allRetriable = false;
          allUnreachable = false;
          continue;
        }
        const e = o.error;
        if (!e.retriable) allRetriable = false;
        if (e instanceof RetriableError) {
          if (!e.unavailable) allUnreachable = false;
          if (e.retryAfterMs && e.retryAfterMs > asked) asked = e.retryAfterMs;
        } else {
          allUnreachable = false;
        }
      }
      asked = Math.min(asked, maxDelay);
      if (asked > 0) askedUntil = Math.max(askedUntil, now + asked);
      if (anyOk) {
        const failures = consecutiveFailures;
        consecutiveFailures = 0;
        failStreak = 0;
        pausedUntil = 0;
        return failures > 0 ? { kind: 'recovered', failures } : STEADY;
      }
      if (allRetriable && ++failStreak >= (allUnreachable ? 1 : FAILING_STREAK) && sentIn === generation) {
        generation++;
        consecutiveFailures++;
        const backoffMs = Math.min(maxDelay, initialDelay * 2 ** Math.min(consecutiveFailures - 1, 30));
        pausedUntil = Math.max(pausedUntil, now + backoffMs * (0.85 + random() * 0.3));
        const first = outcomes[0] as { readonly error: SidekickError };
        return { kind: 'paused', failures: consecutiveFailures, backoffMs, askedMs: asked, error: first.error };
      }
      return STEADY;
    },
  };
}
