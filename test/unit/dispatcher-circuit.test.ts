import { describe, expect, it } from 'vitest';
import { RetryHeap } from '../../src/dispatcher/batcher.js';
import { createCircuit, FAILING_STREAK } from '../../src/dispatcher/circuit.js';
import { mayRetry, retryAfterWait } from '../../src/dispatcher/retries.js';
import { FatalError, RetriableError } from '../../src/errors.js';
import { OK, type ItemOutcome } from '../../src/sink.js';

// The dispatcher's sink-wide circuit, its per-event retry rules and its queue of due retries, alone: pure functions of the
// outcomes and the clock handed in — no sink, no timers. The dispatcher tests check the same rules
// end to end (dispatcher-backoff.test.ts, on fake timers).

const T = 1_000_000;
const fail = (code = 'HTTP_503', extra: { retryAfterMs?: number; unavailable?: boolean } = {}): ItemOutcome => ({
  ok: false,
  error: new RetriableError(code, code, extra),
});
const refused = (): ItemOutcome => fail('ECONNREFUSED', { unavailable: true });
const fatal = (): ItemOutcome => ({ ok: false, error: new FatalError('HTTP_400', 'bad request') });

/** No jitter: random() = 0.5 makes the factor exactly 1. */
function circuit(over: { random?: () => number } = {}) {
  return createCircuit({ concurrency: 32, initialDelay: 100, maxDelay: 1_000, random: () => 0.5, ...over });
}

describe('dispatcher circuit: when the whole sink pauses', () => {
  it('healthy: full concurrency, nothing held, successes change nothing', () => {
    const c = circuit();
    expect(c.limit()).toBe(32);
    expect(c.heldUntil()).toBe(0);
    expect(c.onBatchResult([OK, OK], T)).toEqual({ kind: 'steady' });
    expect(c.limit()).toBe(32);
  });

  it(`an isolated failure is the event's business: the sink pauses only after ${FAILING_STREAK} failed batches in a row`, () => {
    const c = circuit();
    for (let i = 1; i < FAILING_STREAK; i++) expect(c.onBatchResult([fail()], T)).toEqual({ kind: 'steady' });
    expect(c.limit()).toBe(32);
    const d = c.onBatchResult([fail('HTTP_502')], T);
    expect(d).toMatchObject({ kind: 'paused', failures: 1, backoffMs: 100, askedMs: 0, error: { code: 'HTTP_502' } }); // the batch's first error
    expect(c.heldUntil()).toBe(T + 100);
    expect(c.limit()).toBe(1); // then one batch at a time probes
  });

  it('a success in between restarts the streak', () => {
    const c = circuit();
    c.onBatchResult([fail()], T);
    c.onBatchResult([fail()], T);
    c.onBatchResult([OK], T);
    c.onBatchResult([fail()], T);
    expect(c.onBatchResult([fail()], T)).toEqual({ kind: 'steady' });
  });

  it('an unreachable destination (every outcome refused) pauses at once', () => {
    const c = circuit();
    expect(c.onBatchResult([refused(), refused()], T)).toMatchObject({ kind: 'paused', failures: 1 });
    // One refused among other failures is no proof: the streak rule applies.
    const d = circuit();
    expect(d.onBatchResult([refused(), fail()], T)).toEqual({ kind: 'steady' });
  });

  it('a batch with a fatal outcome or a success is not an outage', () => {
    const c = circuit();
    for (let i = 0; i < 5; i++) expect(c.onBatchResult([fail(), fatal()], T)).toEqual({ kind: 'steady' });
    for (let i = 0; i < 5; i++) expect(c.onBatchResult([refused(), OK], T)).toEqual({ kind: 'steady' });
    expect(c.limit()).toBe(32);
  });

  it('each failed probe doubles the pause, up to maxDelay', () => {
    const c = circuit();
    const pauses: number[] = [];
    for (let i = 0; i < 6; i++) {
      const d = c.onBatchResult([refused()], T, c.generation());
      if (d.kind === 'paused') pauses.push(d.backoffMs);
    }
    expect(pauses).toEqual([100, 200, 400, 800, 1_000, 1_000]);
    expect(c.heldUntil()).toBe(T + 1_000);
  });

  it('batches sent before the pause grew are the same outage seen again: they do not grow it', () => {
    const c = circuit();
    const sentIn = c.generation();
    // 32 requests in flight, all refused: the first pauses the sink, the 31 others are the same news.
    expect(c.onBatchResult([refused()], T, sentIn)).toMatchObject({ kind: 'paused', failures: 1, backoffMs: 100 });
    for (let i = 0; i < 31; i++) expect(c.onBatchResult([refused()], T, sentIn)).toEqual({ kind: 'steady' });
    expect(c.heldUntil()).toBe(T + 100);
    // The probe sent after the pause grows it.
    expect(c.onBatchResult([refused()], T + 100, c.generation())).toMatchObject({ kind: 'paused', failures: 2, backoffMs: 200 });
  });

  it('the first success after pauses recovers: full concurrency, the pause lifted', () => {
    const c = circuit();
    c.onBatchResult([refused()], T, c.generation());
    c.onBatchResult([refused()], T, c.generation());
    expect(c.onBatchResult([OK], T + 500)).toEqual({ kind: 'recovered', failures: 2 });
    expect(c.limit()).toBe(32);
    expect(c.heldUntil()).toBe(0);
    expect(c.onBatchResult([OK], T + 500)).toEqual({ kind: 'steady' });
  });

  it('the pause is jittered ±15%', () => {
    const low = circuit({ random: () => 0 });
    low.onBatchResult([refused()], T);
    expect(low.heldUntil()).toBe(T + 85);
    const high = circuit({ random: () => 0.999_999 });
    high.onBatchResult([refused()], T);
    expect(high.heldUntil()).toBeCloseTo(T + 115, 3);
  });
});

describe('dispatcher circuit: Retry-After holds the whole sink', () => {
  it('for the longest Retry-After of the batch, capped by maxDelay, even when other outcomes succeeded', () => {
    const c = circuit();
    expect(c.onBatchResult([fail('HTTP_429', { retryAfterMs: 300 }), OK, fail('HTTP_429', { retryAfterMs: 700 })], T)).toEqual({ kind: 'steady' });
    expect(c.heldUntil()).toBe(T + 700);
    expect(c.limit()).toBe(32); // held, not probing
    c.onBatchResult([fail('HTTP_503', { retryAfterMs: 3_600_000 })], T);
    expect(c.heldUntil()).toBe(T + 1_000);
  });

  it('a success elsewhere does not cancel it, and a shorter one does not shorten it', () => {
    const c = circuit();
    c.onBatchResult([fail('HTTP_429', { retryAfterMs: 800 })], T);
    c.onBatchResult([OK], T + 10);
    c.onBatchResult([fail('HTTP_429', { retryAfterMs: 100 })], T + 20);
    expect(c.heldUntil()).toBe(T + 800);
  });

  it('held until the later of the pause and the Retry-After', () => {
    const c = circuit();
    const d = c.onBatchResult([fail('ECONNREFUSED', { unavailable: true, retryAfterMs: 50 })], T);
    expect(d).toMatchObject({ kind: 'paused', backoffMs: 100, askedMs: 50 });
    expect(c.heldUntil()).toBe(T + 100);
  });
});

describe("dispatcher retries: one event's policy", () => {
  const retry = { attempts: 3, initialDelay: 100, maxDelay: 1_000, maxAge: 60_000 };

  it('retries a retriable failure until the attempts are used up; never a fatal one', () => {
    expect(mayRetry(new RetriableError('HTTP_503', 'x'), 1, T, T, retry)).toBe(true);
    expect(mayRetry(new RetriableError('HTTP_503', 'x'), 2, T, T, retry)).toBe(true);
    expect(mayRetry(new RetriableError('HTTP_503', 'x'), 3, T, T, retry)).toBe(false);
    expect(mayRetry(new FatalError('HTTP_400', 'x'), 0, T, T, retry)).toBe(false);
    expect(mayRetry(new TypeError('bug'), 0, T, T, retry)).toBe(false);
  });

  it('maxAge ends the retries of an old event (when its age is known)', () => {
    expect(mayRetry(new RetriableError('ECONNREFUSED', 'x', { unavailable: true }), 0, T - 60_000, T, retry)).toBe(false);
    expect(mayRetry(new RetriableError('ECONNREFUSED', 'x', { unavailable: true }), 0, T - 59_999, T, retry)).toBe(true);
    expect(mayRetry(new RetriableError('ECONNREFUSED', 'x', { unavailable: true }), 0, Number.NaN, T, retry)).toBe(true);
  });

  it('waits for a Retry-After only beyond the backoff that comes anyway, and not before a last attempt that never comes', () => {
    const asked = (ms: number, unavailable = false) => new RetriableError('HTTP_429', 'x', { retryAfterMs: ms, unavailable });
    // p-retry waits 100·2^0 = 100 ms before the first retry: 400 asked → 300 more.
    expect(retryAfterWait(asked(400), 0, 0, retry)).toBe(300);
    expect(retryAfterWait(asked(400), 1, 1, retry)).toBe(200); // 200 covered
    expect(retryAfterWait(asked(150), 1, 1, retry)).toBe(0);
    // No retry follows the third failure: no wait.
    expect(retryAfterWait(asked(400), 1, 2, retry)).toBe(0);
    // Capped by maxDelay; an unreachable destination's retry has no backoff of its own and uses up no attempt.
    expect(retryAfterWait(asked(3_600_000), 0, 0, retry)).toBe(900);
    expect(retryAfterWait(asked(400, true), 5, 2, retry)).toBe(400);
    expect(retryAfterWait(new RetriableError('HTTP_503', 'x'), 0, 0, retry)).toBe(0);
  });
});

describe('dispatcher batcher: due retries go oldest event first', () => {
  it('pops in arrival order whatever the order they became due in', () => {
    const heap = new RetryHeap();
    const orders = [57, 3, 99, 12, 3_000, 0, 41, 8, 77, 12_345, 5, 64];
    for (const order of orders) heap.push({ order, envelopes: [], done() {} });
    const popped: number[] = [];
    heap.push({ order: 1, envelopes: [], done() {} });
    popped.push(heap.pop().order, heap.pop().order);
    heap.push({ order: 2, envelopes: [], done() {} });
    while (heap.items.length > 0) popped.push(heap.pop().order);
    expect(popped).toEqual([0, 1, 2, 3, 5, 8, 12, 41, 57, 64, 77, 99, 3_000, 12_345]);
  });
});
