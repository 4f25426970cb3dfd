import { describe, expect, it, vi } from 'vitest';
import { createLogger } from '../../src/logger.js';
import { createDispatcher, type Delivery } from '../../src/dispatcher/index.js';
import type { Envelope } from '../../src/envelope.js';
import { FatalError, RetriableError, type SidekickError } from '../../src/errors.js';
import { createMetrics } from '../../src/metrics.js';
import { OK, type ItemOutcome, type Sink } from '../../src/sink.js';
import type { DispatchOptions } from '../../src/config.js';
import { Writable } from 'node:stream';

// These tests use an in-memory sink (a test double of the sink contract): the dispatcher is pure
// logic, and the real sinks are exercised against real services in test/integration.

const quiet = createLogger({ level: 'silent', destination: new Writable({ write: (_c, _e, cb) => cb() }) });

function options(over: Partial<DispatchOptions> = {}): DispatchOptions {
  return {
    retry: { attempts: 5, initialDelay: 1, maxDelay: 5 },
    concurrency: 4,
    batch: { size: 10, linger: 0 },
    maxQueued: 1000,
    ...over,
  };
}

function env(id: number, key: string): Envelope {
  return { id: String(id), source: 'table', channel: 'public.t', key, payload: null, at: new Date().toISOString() };
}

/** A sink whose behaviour per envelope is decided by `decide` (called once per attempt). */
function memorySink(decide: (e: Envelope, attempt: number) => ItemOutcome = () => OK) {
  const delivered: Envelope[] = [];
  const attempts = new Map<string, number>();
  const batches: number[] = [];
  const sink: Sink = {
    name: 'mem',
    type: 'memory',
    async start() {},
    async stop() {},
    async send(batch) {
      batches.push(batch.length);
      const keys = new Set(batch.map((e) => e.key));
      expect(keys.size).toBe(batch.length); // never two of one key in a batch
      await new Promise((r) => setImmediate(r));
      return batch.map((e) => {
        const n = (attempts.get(e.id) ?? 0) + 1;
        attempts.set(e.id, n);
        const outcome = decide(e, n);
        if (outcome.ok) delivered.push(e);
        return outcome;
      });
    },
  };
  return { sink, delivered, attempts, batches };
}

describe('dispatcher (in-memory sink)', () => {
  it('delivers everything, in order per key, in batches', async () => {
    const mem = memorySink();
    const d = createDispatcher({ sink: mem.sink, options: options(), logger: quiet });
    const events = Array.from({ length: 300 }, (_, i) => env(i, `k${i % 7}`));
    const results = await Promise.all(events.map((e) => d.deliver(e)));
    expect(results.every((r) => r.status === 'delivered')).toBe(true);
    expect(mem.delivered).toHaveLength(300);
    for (let k = 0; k < 7; k++) {
      const ids = mem.delivered.filter((e) => e.key === `k${k}`).map((e) => Number(e.id));
      expect(ids).toEqual([...ids].sort((a, b) => a - b));
    }
    expect(Math.max(...mem.batches)).toBeGreaterThan(1);
  });

  it('retries a retriable failure; later events of that key wait, other keys flow', async () => {
    const order: string[] = [];
    const mem = memorySink((e, attempt) => {
      if (e.id === '1' && attempt < 3) return { ok: false, error: new RetriableError('HTTP_503', 'unavailable') };
      order.push(e.id);
      return OK;
    });
    const d = createDispatcher({ sink: mem.sink, options: options(), logger: quiet });
    const [a, b, c] = await Promise.all([d.deliver(env(1, 'A')), d.deliver(env(2, 'A')), d.deliver(env(3, 'B'))]);
    expect(a).toEqual({ status: 'delivered', attempts: 3 });
    expect(b).toEqual({ status: 'delivered', attempts: 1 });
    expect(c?.status).toBe('delivered');
    expect(order.indexOf('1')).toBeLessThan(order.indexOf('2'));
    expect(order.indexOf('3')).toBeLessThan(order.indexOf('1')); // B was not held up by A's retries
  });

  it("a lane is a channel and a key: one key on two channels, and a channel's keyless events, are separate lanes", async () => {
    const order: string[] = [];
    const sink: Sink = {
      name: 'mem',
      type: 'memory',
      async start() {},
      async stop() {},
      async send(batch) {
        await new Promise((r) => setImmediate(r));
        return batch.map((e) => {
          if (e.id === 'a1' && order.filter((id) => id === 'a1!').length < 2) {
            order.push('a1!');
            return { ok: false, error: new RetriableError('HTTP_503', 'unavailable') };
          }
          order.push(e.id);
          return OK;
        });
      },
    };
    const d = createDispatcher({ sink, options: options(), logger: quiet });
    const at = new Date().toISOString();
    const e = (id: string, channel: string, key?: string): Envelope => ({
      id,
      source: 'publish',
      channel,
      at,
      ...(key === undefined ? {} : { key }),
    });
    const results = await Promise.all([
      d.deliver(e('a1', 'a', '1')),
      d.deliver(e('a2', 'a', '1')),
      d.deliver(e('b1', 'b', '1')),
      d.deliver(e('n1', 'a')),
      d.deliver(e('n2', 'a')),
    ]);
    expect(results.map((r) => r.status)).toEqual(['delivered', 'delivered', 'delivered', 'delivered', 'delivered']);
    expect(order.indexOf('a1')).toBeLessThan(order.indexOf('a2'));
    // Channel b's key 1 and channel a's keyless events did not wait for a/1's retries.
    for (const other of ['b1', 'n1', 'n2']) expect(order.indexOf(other)).toBeLessThan(order.indexOf('a1'));
    expect(order.indexOf('n1')).toBeLessThan(order.indexOf('n2'));
  });

  it('dead-letters a fatal error after one attempt and moves on to the next event of the key', async () => {
    const metrics = createMetrics();
    const mem = memorySink((e) => (e.id === '1' ? { ok: false, error: new FatalError('HTTP_400', 'bad request') } : OK));
    const d = createDispatcher({ sink: mem.sink, options: options(), logger: quiet, metrics });
    const [a, b] = await Promise.all([d.deliver(env(1, 'A')), d.deliver(env(2, 'A'))]);
    expect(a).toMatchObject({ status: 'dead', attempts: 1, error: { code: 'HTTP_400' } });
    expect(b?.status).toBe('delivered');
    expect((await metrics.dead.get()).values[0]?.value).toBe(1);
  });

  it('gives up after the configured attempts', async () => {
    const mem = memorySink(() => ({ ok: false, error: new RetriableError('HTTP_500', 'boom') }));
    const d = createDispatcher({ sink: mem.sink, options: options({ retry: { attempts: 3, initialDelay: 1, maxDelay: 2 } }), logger: quiet });
    const r = await d.deliver(env(1, 'A'));
    expect(r).toMatchObject({ status: 'dead', attempts: 3 });
    expect((r as { error: SidekickError }).error.code).toBe('HTTP_500');
    expect(mem.attempts.get('1')).toBe(3);
  });

  it('does not use up attempts while the destination is unreachable, but honours maxAge', async () => {
    const mem = memorySink((_e, attempt) =>
      attempt <= 6 ? { ok: false, error: new RetriableError('ECONNREFUSED', 'refused', { unavailable: true }) } : OK,
    );
    const d = createDispatcher({ sink: mem.sink, options: options({ retry: { attempts: 2, initialDelay: 1, maxDelay: 2 } }), logger: quiet });
    expect(await d.deliver(env(1, 'A'))).toEqual({ status: 'delivered', attempts: 7 });

    const down = memorySink(() => ({ ok: false, error: new RetriableError('ECONNREFUSED', 'refused', { unavailable: true }) }));
    const old = { ...env(2, 'B'), at: new Date(Date.now() - 60_000).toISOString() };
    const d2 = createDispatcher({
      sink: down.sink,
      options: options({ retry: { attempts: 2, initialDelay: 1, maxDelay: 2, maxAge: 30_000 } }),
      logger: quiet,
    });
    expect(await d2.deliver(old)).toMatchObject({ status: 'dead', attempts: 1 });
  });

  it('treats a send() that throws as a failure of the whole batch, classified', async () => {
    let calls = 0;
    const sink: Sink = {
      name: 'throws',
      type: 'memory',
      async start() {},
      async stop() {},
      async send(batch) {
        calls++;
        if (calls === 1) throw Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });
        return batch.map(() => OK);
      },
    };
    const d = createDispatcher({ sink, options: options(), logger: quiet });
    expect(await d.deliver(env(1, 'A'))).toEqual({ status: 'delivered', attempts: 2 });
    const bug: Sink = {
      ...sink,
      name: 'bug',
      async send() {
        throw new TypeError('x is undefined');
      },
    };
    const d2 = createDispatcher({ sink: bug, options: options(), logger: quiet });
    expect(await d2.deliver(env(1, 'A'))).toMatchObject({ status: 'dead', attempts: 1, error: { code: 'SINK_BUG' } });
  });

  it('refuses events beyond maxQueued (counted), unless forced', async () => {
    const metrics = createMetrics();
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    const sink: Sink = {
      name: 'slow',
      type: 'memory',
      async start() {},
      async stop() {},
      async send(b) {
        await gate;
        return b.map(() => OK);
      },
    };
    const d = createDispatcher({ sink, options: options({ maxQueued: 3 }), logger: quiet, metrics });
    const p = [1, 2, 3].map((i) => d.deliver(env(i, `k${i}`)));
    expect(await d.deliver(env(4, 'k4'))).toEqual({ status: 'dropped', attempts: 0 });
    const forced = d.deliver(env(5, 'k5'), { force: true });
    release();
    expect((await Promise.all([...p, forced])).map((r: Delivery) => r.status)).toEqual(['delivered', 'delivered', 'delivered', 'delivered']);
    expect((await metrics.dropped.get()).values[0]?.value).toBe(1);
  });

  it('stop() waits for in-flight work, then aborts what is still retrying', async () => {
    const mem = memorySink((e) => (e.key === 'A' ? { ok: false, error: new RetriableError('HTTP_503', 'down') } : OK));
    const d = createDispatcher({ sink: mem.sink, options: options({ retry: { attempts: 100, initialDelay: 20, maxDelay: 50 } }), logger: quiet });
    const a = d.deliver(env(1, 'A'));
    const b = d.deliver(env(2, 'B'));
    await d.stop(100);
    expect((await b).status).toBe('delivered');
    expect((await a).status).toBe('aborted');
    expect((await d.deliver(env(3, 'C'))).status).toBe('aborted');
    await d.stop(100); // idempotent
  });

  it('stop() gives back events still waiting for a send slot as aborted (never dead-lettered)', async () => {
    // One send at a time; the first hangs until aborted, so the second waits in the batcher.
    const sink: Sink = {
      name: 'hang',
      type: 'memory',
      async start() {},
      async stop() {},
      send: (batch, signal) =>
        new Promise((resolve) => {
          signal.addEventListener('abort', () => resolve(batch.map(() => ({ ok: false, error: new RetriableError('ABORTED', 'aborted') }))), {
            once: true,
          });
        }),
    };
    const d = createDispatcher({ sink, options: options({ concurrency: 1, batch: { size: 1, linger: 0 } }), logger: quiet });
    const first = d.deliver(env(1, 'A'));
    const second = d.deliver(env(2, 'B'));
    await d.stop(20);
    expect((await first).status).toBe('aborted');
    expect((await second).status).toBe('aborted');
  });

  it('backs the whole sink off while every attempt fails, and recovers', async () => {
    // On fake timers: the retry delays and the sink-wide pause run on the fake clock.
    vi.useFakeTimers();
    try {
      let down = true;
      const times: number[] = [];
      const sink: Sink = {
        name: 'flaky',
        type: 'memory',
        async start() {},
        async stop() {},
        async send(b) {
          times.push(Date.now());
          return b.map(() => (down ? { ok: false, error: new RetriableError('ECONNREFUSED', 'refused', { unavailable: true }) } : OK));
        },
      };
      const d = createDispatcher({ sink, options: options({ retry: { attempts: 3, initialDelay: 10, maxDelay: 80 } }), logger: quiet });
      const many = Array.from({ length: 20 }, (_, i) => d.deliver(env(i, `k${i}`)));
      await vi.advanceTimersByTimeAsync(300);
      const callsWhileDown = times.length;
      down = false;
      let settled = false;
      const all = Promise.all(many).finally(() => {
        settled = true;
      });
      while (!settled) await vi.advanceTimersByTimeAsync(1);
      const results = await all;
      expect(results.every((r) => r.status === 'delivered')).toBe(true);
      // 20 keys retrying independently every ~10 ms would make hundreds of calls in 300 ms;
      // the sink-wide backoff (10, 20, 40, 80, 80 … ms) keeps it to a handful.
      expect(callsWhileDown).toBeLessThan(15);
    } finally {
      vi.useRealTimers();
    }
  });

  it("an ordered batch of several runs gives each run its own outcomes, even when a run's lane has more waiting", async () => {
    // One batch holds A's run (3) and B's run (2); A4 arrives while it is in flight, so A's next
    // run (1 envelope) is ready the moment A's outcomes are handed over — B must still get its own.
    let release: () => void = () => {};
    const inFlight = new Promise<void>((resolve) => {
      release = resolve;
    });
    let sent: () => void = () => {};
    const firstSent = new Promise<void>((resolve) => {
      sent = resolve;
    });
    const batches: string[][] = [];
    const sink: Sink = {
      name: 'ordered',
      type: 'memory',
      ordered: true,
      async start() {},
      async stop() {},
      async send(batch) {
        batches.push(batch.map((e) => e.id));
        if (batches.length === 1) {
          sent();
          await inFlight;
        }
        return batch.map((e) => (e.id === 'B2' ? { ok: false, error: new FatalError('HTTP_400', 'bad request') } : OK));
      },
    };
    const d = createDispatcher({ sink, options: options({ concurrency: 4, batch: { size: 10, linger: 0 } }), logger: quiet });
    const at = new Date().toISOString();
    const e = (id: string, key: string): Envelope => ({ id, source: 'publish', channel: 'c', key, at });
    const first = ['A1', 'A2', 'A3', 'B1', 'B2'].map((id) => d.deliver(e(id, id[0] as string)));
    await firstSent;
    const a4 = d.deliver(e('A4', 'A'));
    release();
    const results = await Promise.all([...first, a4]);
    expect(batches[0]).toEqual(['A1', 'A2', 'A3', 'B1', 'B2']);
    expect(results.map((r) => r.status)).toEqual(['delivered', 'delivered', 'delivered', 'delivered', 'dead', 'delivered']);
  });

  it('ordered sinks get runs of one key per batch, and a retried envelope is never overtaken', async () => {
    const seen: string[] = [];
    const batches: string[][] = [];
    let failedOnce = false;
    const sink: Sink = {
      name: 'ordered',
      type: 'memory',
      ordered: true,
      async start() {},
      async stop() {},
      async send(batch) {
        batches.push(batch.map((e) => e.id));
        await new Promise((r) => setImmediate(r));
        return batch.map((e) => {
          if (e.id === '5' && !failedOnce) {
            failedOnce = true;
            return { ok: false, error: new RetriableError('BROKER', 'not leader') };
          }
          seen.push(e.id);
          return OK;
        });
      },
    };
    const d = createDispatcher({ sink, options: options({ batch: { size: 50, linger: 0 } }), logger: quiet });
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => d.deliver(env(i, 'one-key'))));
    expect(results.every((r) => r.status === 'delivered')).toBe(true);
    expect(batches[0]).toHaveLength(20); // one run, one batch
    // What the sink took last for each id must be in order: 6..19 were taken before 5 failed over,
    // then sent again after 5 was delivered.
    const lastIndex = new Map(seen.map((id, i) => [id, i]));
    const finalOrder = [...lastIndex.entries()].sort((a, b) => a[1] - b[1]).map(([id]) => Number(id));
    expect(finalOrder).toEqual(Array.from({ length: 20 }, (_, i) => i));
    expect(results[5]).toEqual({ status: 'delivered', attempts: 2 });
  });

  it("reports each sink's queue size and delivered count on /metrics, read at scrape time", async () => {
    const metrics = createMetrics();
    let release: () => void = () => {};
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    const sink: Sink = {
      name: 'slow',
      type: 'memory',
      async start() {},
      async stop() {},
      async send(batch) {
        await held;
        return batch.map(() => OK);
      },
    };
    const d = createDispatcher({ sink, options: options({ concurrency: 2, batch: { size: 1, linger: 0 } }), logger: quiet, metrics });
    const results = Array.from({ length: 5 }, (_, i) => d.deliver(env(i, `k${i}`)));
    const scrape = async () => metrics.registry.metrics();
    expect(await scrape()).toContain('sidekick_sink_queued{sink="slow"} 5');
    expect(await scrape()).not.toMatch(/sidekick_events_delivered_total\{sink="slow"\} [1-9]/);
    release();
    await Promise.all(results);
    const text = await scrape();
    expect(text).toContain('sidekick_sink_queued{sink="slow"} 0');
    expect(text).toContain('sidekick_events_delivered_total{sink="slow"} 5');
    // Scraped again: counted once, not again.
    expect(await scrape()).toContain('sidekick_events_delivered_total{sink="slow"} 5');
  });
});
