import { Writable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { DispatchOptions } from '../../src/config.js';
import { createDispatcher, type Delivery } from '../../src/dispatcher/index.js';
import type { Envelope } from '../../src/envelope.js';
import { RetriableError } from '../../src/errors.js';
import { createLogger } from '../../src/logger.js';
import { OK, type ItemOutcome, type Sink } from '../../src/sink.js';

// Issue 16, item 2: a receiver that fails each event's first two attempts must still get every
// event. The sink-wide pause probes one batch at a time; that probe must be the oldest event whose
// retry is due, not a fresh event's first attempt, or no event ever reaches its third attempt.
// Fake timers drive p-retry's delays, the pause and the sink's latency: minutes run in milliseconds.

const quiet = createLogger({ level: 'silent', destination: new Writable({ write: (_c, _e, cb) => cb() }) });

/** The webhook's defaults (concurrency 32, one event per request) and the retry policy of the report. */
function options(over: Partial<DispatchOptions> = {}): DispatchOptions {
  return {
    retry: { attempts: 6, initialDelay: 100, maxDelay: 5_000 },
    concurrency: 32,
    batch: { size: 1, linger: 0 },
    maxQueued: 10_000,
    ...over,
  };
}

function env(id: number, key: string): Envelope {
  return { id: String(id), source: 'table', channel: 'public.orders', key, payload: null, at: new Date().toISOString() };
}

/** A receiver that answers 500 to the first `failures` attempts of every event, then 204. */
function failingFirstAttempts(failures: number) {
  const attempts = new Map<string, number>();
  const log: { id: string; attempt: number; at: number }[] = [];
  const sink: Sink = {
    name: 'flaky',
    type: 'memory',
    async start() {},
    async stop() {},
    async send(batch) {
      await new Promise((r) => setTimeout(r, 5)); // the request's round trip
      return batch.map((e): ItemOutcome => {
        const n = (attempts.get(e.id) ?? 0) + 1;
        attempts.set(e.id, n);
        log.push({ id: e.id, attempt: n, at: Date.now() });
        return n <= failures ? { ok: false, error: new RetriableError('HTTP_500', 'HTTP 500') } : OK;
      });
    },
  };
  return { sink, log };
}

/** Advances fake time in steps until every delivery settled or `limitMs` passed; returns the time taken. */
async function settle(results: (Delivery | undefined)[], limitMs: number): Promise<number> {
  const started = Date.now();
  while (results.some((r) => r === undefined) && Date.now() - started < limitMs) {
    await vi.advanceTimersByTimeAsync(50);
  }
  return Date.now() - started;
}

describe('dispatcher: retries are not starved by the sink-wide pause', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('120 events, each failing its first two attempts: all delivered at attempt 3, within seconds', async () => {
    const rx = failingFirstAttempts(2);
    const d = createDispatcher({ sink: rx.sink, options: options(), logger: quiet });
    const results: (Delivery | undefined)[] = new Array(120).fill(undefined);
    for (let i = 0; i < 120; i++)
      void d.deliver(env(i, `k${i}`)).then((r) => {
        results[i] = r;
      });
    const took = await settle(results, 120_000);
    expect(results.filter((r) => r?.status === 'delivered')).toHaveLength(120);
    expect(results.every((r) => r?.status === 'delivered' && r.attempts === 3)).toBe(true);
    expect(rx.log).toHaveLength(360);
    // Before the fix nothing was delivered in 70 s (every probe was a fresh first attempt), and
    // everything took about 20 minutes. Each event needs ~300–600 ms of its own backoff; ~3 s in all.
    expect(took).toBeLessThan(10_000);
    await d.stop(1_000);
  });

  it('while paused, each probe is the oldest event whose retry is due, not a fresh first attempt', async () => {
    const rx = failingFirstAttempts(2);
    const d = createDispatcher({ sink: rx.sink, options: options({ concurrency: 4 }), logger: quiet });
    const results: (Delivery | undefined)[] = new Array(60).fill(undefined);
    for (let i = 0; i < 60; i++)
      void d.deliver(env(i, `k${i}`)).then((r) => {
        results[i] = r;
      });
    await settle(results, 120_000);
    expect(results.every((r) => r?.status === 'delivered' && r.attempts === 3)).toBe(true);
    // The first event to succeed is one of the first wave (0–3): their retries went before the
    // fresh first attempts of the 56 others.
    const firstSuccess = rx.log.find((a) => a.attempt === 3);
    expect(['0', '1', '2', '3']).toContain(firstSuccess?.id);
    await d.stop(1_000);
  });

  it('keeps per-key order: one key, every event failing twice, delivered in order', async () => {
    const rx = failingFirstAttempts(2);
    const d = createDispatcher({ sink: rx.sink, options: options(), logger: quiet });
    const order: string[] = [];
    const results: (Delivery | undefined)[] = new Array(10).fill(undefined);
    for (let i = 0; i < 10; i++) {
      void d.deliver(env(i, 'same')).then((r) => {
        results[i] = r;
        order.push(String(i));
      });
    }
    await settle(results, 300_000);
    expect(results.every((r) => r?.status === 'delivered' && r.attempts === 3)).toBe(true);
    expect(order).toEqual(Array.from({ length: 10 }, (_, i) => String(i)));
    // The receiver saw each event's attempts before any attempt of the next one.
    const seen = rx.log.map((a) => Number(a.id));
    expect(seen).toEqual([...seen].sort((a, b) => a - b));
    await d.stop(1_000);
  });
});
