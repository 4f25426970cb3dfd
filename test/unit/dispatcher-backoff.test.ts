import { Writable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { DispatchOptions } from '../../src/config.js';
import { createDispatcher } from '../../src/dispatcher/index.js';
import type { Envelope } from '../../src/envelope.js';
import { RetriableError } from '../../src/errors.js';
import { createLogger } from '../../src/logger.js';
import { OK, type ItemOutcome, type Sink } from '../../src/sink.js';

// The dispatcher is pure logic: these tests drive it with an in-memory sink (a test double of the
// sink contract) on fake timers — p-retry's delays, the sink-wide pause, Retry-After and the sink's
// own latency all run on the fake clock, so every gap below is measured exactly, not slept through.
// They pin down the sink-wide backoff and Retry-After rules that the webhook sink relies on; the
// webhook tests exercise the same rules against a real HTTP server.

const quiet = createLogger({ level: 'silent', destination: new Writable({ write: (_c, _e, cb) => cb() }) });

function options(over: Partial<DispatchOptions> = {}): DispatchOptions {
  return { retry: { attempts: 5, initialDelay: 10, maxDelay: 1000 }, concurrency: 32, batch: { size: 1, linger: 0 }, maxQueued: 10_000, ...over };
}

function env(id: number, key: string): Envelope {
  return { id: String(id), source: 'table', channel: 'public.t', key, payload: null, at: new Date().toISOString() };
}

/** A sink that records every attempt (time, id, how many send() calls were in flight). */
function recordingSink(decide: (e: Envelope, attempt: number) => ItemOutcome, delayMs = 2) {
  const attempts: { id: string; at: number; inFlight: number }[] = [];
  const counts = new Map<string, number>();
  let inFlight = 0;
  const sink: Sink = {
    name: 'rec',
    type: 'memory',
    async start() {},
    async stop() {},
    async send(batch) {
      inFlight++;
      try {
        for (const e of batch) attempts.push({ id: e.id, at: Date.now(), inFlight });
        await new Promise((r) => setTimeout(r, delayMs));
        return batch.map((e) => {
          const n = (counts.get(e.id) ?? 0) + 1;
          counts.set(e.id, n);
          return decide(e, n);
        });
      } finally {
        inFlight--;
      }
    },
  };
  return { sink, attempts };
}

/** Runs the fake clock 1 ms at a time until `p` settles (at most `limitMs`), then returns it. */
async function settle<T>(p: Promise<T>, limitMs = 60_000): Promise<T> {
  let done = false;
  void p.then(
    () => {
      done = true;
    },
    () => {
      done = true;
    },
  );
  const started = Date.now();
  while (!done && Date.now() - started < limitMs) await vi.advanceTimersByTimeAsync(1);
  return p;
}

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe('dispatcher: Retry-After and sink-wide backoff', () => {
  it('waits at least Retry-After before retrying that event', async () => {
    const rec = recordingSink((_e, n) => (n === 1 ? { ok: false, error: new RetriableError('HTTP_429', 'slow down', { retryAfterMs: 400 }) } : OK));
    const d = createDispatcher({ sink: rec.sink, options: options(), logger: quiet });
    expect(await settle(d.deliver(env(1, 'A')))).toEqual({ status: 'delivered', attempts: 2 });
    const gap = (rec.attempts[1]?.at ?? 0) - (rec.attempts[0]?.at ?? 0);
    expect(gap).toBeGreaterThanOrEqual(395);
    expect(gap).toBeLessThan(400 + 150);
  });

  it('caps Retry-After by retry.maxDelay', async () => {
    const rec = recordingSink((_e, n) => (n === 1 ? { ok: false, error: new RetriableError('HTTP_503', 'later', { retryAfterMs: 3_600_000 }) } : OK));
    const d = createDispatcher({ sink: rec.sink, options: options({ retry: { attempts: 5, initialDelay: 10, maxDelay: 150 } }), logger: quiet });
    const started = Date.now();
    expect(await settle(d.deliver(env(1, 'A')))).toEqual({ status: 'delivered', attempts: 2 });
    expect(Date.now() - started).toBeLessThan(1_000);
    expect((rec.attempts[1]?.at ?? 0) - (rec.attempts[0]?.at ?? 0)).toBeGreaterThanOrEqual(140);
  });

  it('a wave of concurrent failures grows the sink-wide backoff once, not once per request', async () => {
    // 32 keys in flight all fail once (one outage seen 32 times). Counting each as a new failure
    // would push the pause straight to maxDelay (5 s here) and recovery would take that long.
    const rec = recordingSink((_e, n) => (n === 1 ? { ok: false, error: new RetriableError('HTTP_503', 'blip') } : OK), 20);
    const d = createDispatcher({ sink: rec.sink, options: options({ retry: { attempts: 5, initialDelay: 20, maxDelay: 5_000 } }), logger: quiet });
    const started = Date.now();
    const results = await settle(Promise.all(Array.from({ length: 32 }, (_, i) => d.deliver(env(i, `k${i}`)))));
    expect(results.every((r) => r.status === 'delivered')).toBe(true);
    expect(Date.now() - started).toBeLessThan(2_000);
  });

  it('while failing, probes with one request at a time; full concurrency again after recovery', async () => {
    let down = true;
    const rec = recordingSink(() => (down ? { ok: false, error: new RetriableError('ECONNREFUSED', 'refused', { unavailable: true }) } : OK), 5);
    const d = createDispatcher({ sink: rec.sink, options: options({ retry: { attempts: 3, initialDelay: 10, maxDelay: 40 } }), logger: quiet });
    const all = Array.from({ length: 40 }, (_, i) => d.deliver(env(i, `k${i}`)));
    await vi.advanceTimersByTimeAsync(300);
    // The first flush sends 32 (the concurrency) at once; everything after is probing.
    const whileDown = rec.attempts.slice(32);
    expect(whileDown.length).toBeGreaterThan(2); // it kept probing
    expect(Math.max(...whileDown.map((a) => a.inFlight))).toBe(1);
    const before = rec.attempts.length;
    down = false;
    const results = await settle(Promise.all(all));
    expect(results.every((r) => r.status === 'delivered')).toBe(true);
    expect(Math.max(...rec.attempts.slice(before).map((a) => a.inFlight))).toBeGreaterThan(1);
  });

  it('a Retry-After holds the whole sink that long, even when other events of the batch succeeded', async () => {
    const rec = recordingSink(
      (e, n) => (e.id === '0' && n === 1 ? { ok: false, error: new RetriableError('HTTP_429', 'rate', { retryAfterMs: 300 }) } : OK),
      2,
    );
    const d = createDispatcher({ sink: rec.sink, options: options({ concurrency: 1, batch: { size: 2, linger: 0 } }), logger: quiet });
    const first = [d.deliver(env(0, 'a')), d.deliver(env(1, 'b'))];
    await settle(first[1] as Promise<unknown>);
    const refusedAt = rec.attempts[0]?.at ?? 0;
    await settle(d.deliver(env(2, 'c')));
    const third = rec.attempts.find((a) => a.id === '2');
    expect((third?.at ?? 0) - refusedAt).toBeGreaterThanOrEqual(295);
    expect((await settle(first[0] as Promise<{ status: string }>))?.status).toBe('delivered');
  });
});

describe('dispatcher: an isolated failure is not an outage', () => {
  it('one event failing once does not pause the other keys', async () => {
    const rec = recordingSink((e, n) => (e.id === '1' && n === 1 ? { ok: false, error: new RetriableError('HTTP_502', 'blip') } : OK), 2);
    const d = createDispatcher({ sink: rec.sink, options: options({ retry: { attempts: 5, initialDelay: 1000, maxDelay: 2000 } }), logger: quiet });
    const a = d.deliver(env(1, 'A'));
    await vi.advanceTimersByTimeAsync(30); // A's first attempt has failed by now
    const t = Date.now();
    expect((await settle(d.deliver(env(2, 'B')))).status).toBe('delivered');
    expect(Date.now() - t).toBeLessThan(500); // not held for A's backoff (≥ 850 ms with jitter)
    expect(await settle(a)).toEqual({ status: 'delivered', attempts: 2 });
  });
});
