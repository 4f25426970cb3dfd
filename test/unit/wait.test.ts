import { Writable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createLogger } from '../../src/logger.js';
import { bounded, RECONNECT_MAX_MS, reconnectDelay, retryForever, settleBy, sleep } from '../../src/wait.js';

// Every wait of the bridge on fake timers: minutes of backoff run in milliseconds, and a wait that
// is one tick too short or too long fails.

function capture() {
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger({
    level: 'debug',
    destination: new Writable({
      write(chunk: Buffer, _e, cb) {
        lines.push(JSON.parse(chunk.toString()));
        cb();
      },
    }),
  });
  return { logger, lines };
}

/** A promise's state without waiting for it. */
function track<T>(p: Promise<T>) {
  const s: { settled: boolean; value?: T; error?: unknown } = { settled: false };
  p.then(
    (value) => {
      s.settled = true;
      s.value = value;
    },
    (error: unknown) => {
      s.settled = true;
      s.error = error;
    },
  );
  return s;
}

beforeEach(() => {
  vi.useFakeTimers({ now: 1_000_000 });
});
afterEach(() => {
  vi.useRealTimers();
});

describe('sleep', () => {
  it('resolves after the time, not before', async () => {
    const s = track(sleep(1_000));
    await vi.advanceTimersByTimeAsync(999);
    expect(s.settled).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(s.settled).toBe(true);
  });

  it('resolves at once when the signal aborts (or had), and leaves no timer behind', async () => {
    const c = new AbortController();
    const s = track(sleep(60_000, c.signal));
    await vi.advanceTimersByTimeAsync(10);
    c.abort();
    await vi.advanceTimersByTimeAsync(0);
    expect(s.settled).toBe(true);
    expect(vi.getTimerCount()).toBe(0);
    await expect(sleep(60_000, c.signal)).resolves.toBeUndefined();
    expect(vi.getTimerCount()).toBe(0);
  });

  it('does not keep the process alive unless asked to', async () => {
    const unref = vi.spyOn(globalThis, 'setTimeout');
    void sleep(10);
    const plain = unref.mock.results.at(-1)?.value as NodeJS.Timeout;
    void sleep(10, undefined, { keepAlive: true });
    const kept = unref.mock.results.at(-1)?.value as NodeJS.Timeout;
    unref.mockRestore();
    expect(plain.hasRef()).toBe(false);
    expect(kept.hasRef()).toBe(true);
    await vi.advanceTimersByTimeAsync(10);
  });
});

describe('reconnectDelay (the jitter injected)', () => {
  it('50 ms·e^attempt ±15%, capped at RECONNECT_MAX_MS by default', () => {
    expect(reconnectDelay(1, undefined, () => 0.5)).toBe(Math.round(50 * Math.E));
    expect(reconnectDelay(2, undefined, () => 0)).toBe(Math.round(50 * Math.exp(2) * 0.85));
    expect(reconnectDelay(100, undefined, () => 0.999)).toBe(RECONNECT_MAX_MS);
    expect(reconnectDelay(100, 500, () => 0.999)).toBe(500);
  });
});

describe('retryForever: the connect loops', () => {
  it('retries with the jittered backoff until fn succeeds, and returns its value', async () => {
    vi.spyOn(Math, 'random').mockReturnValue(0.5);
    const { logger, lines } = capture();
    const attempts: number[] = [];
    const r = track(
      retryForever({ signal: new AbortController().signal, logger, what: 'cannot connect', fields: { sink: 'k' } }, async (attempt) => {
        attempts.push(attempt);
        if (attempt < 3) throw new Error(`refused ${attempt}`);
        return 'connected';
      }),
    );
    await vi.advanceTimersByTimeAsync(0);
    expect(attempts).toEqual([1]);
    // After the first failure: reconnectDelay(1) = 136 ms.
    await vi.advanceTimersByTimeAsync(135);
    expect(attempts).toEqual([1]);
    await vi.advanceTimersByTimeAsync(1);
    expect(attempts).toEqual([1, 2]);
    // After the second: reconnectDelay(2) = 369 ms.
    await vi.advanceTimersByTimeAsync(368);
    expect(attempts).toEqual([1, 2]);
    await vi.advanceTimersByTimeAsync(1);
    expect(r).toMatchObject({ settled: true, value: 'connected' });
    expect(lines.map((l) => [l.level, l.msg, l.sink, l.err, l.attempt, l.retryInMs])).toEqual([
      [50, 'cannot connect; retrying', 'k', 'refused 1', 1, 136],
      [50, 'cannot connect; retrying', 'k', 'refused 2', 2, 369],
    ]);
    vi.restoreAllMocks();
  });

  it('waits at most maxDelayMs, logs at the level asked, and tells onFailure', async () => {
    vi.spyOn(Math, 'random').mockReturnValue(0.999);
    const { logger, lines } = capture();
    const heard: [string, number, number][] = [];
    const c = new AbortController();
    void retryForever(
      {
        signal: c.signal,
        logger,
        what: 'reconnect failed',
        level: 'warn',
        maxDelayMs: 200,
        onFailure: (e, attempt, retryInMs) => heard.push([(e as Error).message, attempt, retryInMs]),
      },
      async () => {
        throw new Error('down');
      },
    );
    await vi.advanceTimersByTimeAsync(1_000);
    expect(heard.every(([, , wait]) => wait <= 200)).toBe(true);
    expect(heard.length).toBeGreaterThanOrEqual(5);
    expect(lines.every((l) => l.level === 40 && l.msg === 'reconnect failed; retrying')).toBe(true);
    c.abort();
    vi.restoreAllMocks();
  });

  it('an abort ends the wait at once and starts no further attempt', async () => {
    const c = new AbortController();
    let calls = 0;
    const r = track(
      retryForever({ signal: c.signal, what: 'x' }, async () => {
        calls++;
        throw new Error('no');
      }),
    );
    await vi.advanceTimersByTimeAsync(0);
    expect(calls).toBe(1);
    c.abort();
    await vi.advanceTimersByTimeAsync(0);
    expect(r).toEqual({ settled: true, value: undefined });
    expect(calls).toBe(1);
    expect(vi.getTimerCount()).toBe(0);
    // Already aborted: not even a first attempt.
    await expect(
      retryForever({ signal: c.signal, what: 'x' }, async () => {
        calls++;
      }),
    ).resolves.toBeUndefined();
    expect(calls).toBe(1);
  });

  it('a failure that comes with the abort is not logged as a retry', async () => {
    const c = new AbortController();
    const { logger, lines } = capture();
    const r = track(
      retryForever({ signal: c.signal, logger, what: 'x' }, async () => {
        c.abort();
        throw new Error('aborted');
      }),
    );
    await vi.advanceTimersByTimeAsync(0);
    expect(r).toEqual({ settled: true, value: undefined });
    expect(lines).toEqual([]);
  });
});

describe('bounded: one timeout that a signal can also end', () => {
  it('settles like the work when it is in time, and leaves no timer or listener behind', async () => {
    const c = new AbortController();
    const add = vi.spyOn(c.signal, 'addEventListener');
    const remove = vi.spyOn(c.signal, 'removeEventListener');
    const r = track(bounded(new Promise((resolve) => setTimeout(() => resolve('v'), 500)), { ms: 1_000, signal: c.signal }));
    await vi.advanceTimersByTimeAsync(500);
    expect(r).toEqual({ settled: true, value: 'v' });
    expect(vi.getTimerCount()).toBe(0);
    expect(remove).toHaveBeenCalledWith('abort', add.mock.calls[0]?.[1]);
    const error = new Error('refused');
    await expect(bounded(Promise.reject(error), { ms: 1_000 })).rejects.toBe(error);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('rejects with timedOut() when time is up (default: how long it waited)', async () => {
    const late = track(bounded(new Promise(() => {}), { ms: 1_000, timedOut: () => new Error('broker: no answer') }));
    await vi.advanceTimersByTimeAsync(999);
    expect(late.settled).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect((late.error as Error).message).toBe('broker: no answer');
    const plain = track(bounded(new Promise(() => {}), { ms: 250 }));
    await vi.advanceTimersByTimeAsync(250);
    expect((plain.error as Error).message).toBe('no answer within 250 ms');
  });

  it("rejects with aborted() (default: the signal's reason) as soon as the signal aborts, or had", async () => {
    const c = new AbortController();
    const r = track(bounded(new Promise(() => {}), { signal: c.signal, aborted: () => new Error('send aborted') }));
    await vi.advanceTimersByTimeAsync(60_000);
    expect(r.settled).toBe(false); // no time limit given
    c.abort(new Error('stopping'));
    await vi.advanceTimersByTimeAsync(0);
    expect((r.error as Error).message).toBe('send aborted');
    await expect(bounded(new Promise(() => {}), { signal: c.signal, ms: 10 })).rejects.toThrow('stopping');
    expect(vi.getTimerCount()).toBe(0);
  });

  it('its timer does not keep the process alive unless asked to', async () => {
    const spy = vi.spyOn(globalThis, 'setTimeout');
    void bounded(new Promise(() => {}), { ms: 10 }).catch(() => {});
    const plain = spy.mock.results.at(-1)?.value as NodeJS.Timeout;
    void bounded(new Promise(() => {}), { ms: 10, keepAlive: true }).catch(() => {});
    const kept = spy.mock.results.at(-1)?.value as NodeJS.Timeout;
    spy.mockRestore();
    expect(plain.hasRef()).toBe(false);
    expect(kept.hasRef()).toBe(true);
    await vi.advanceTimersByTimeAsync(10);
  });
});

describe('settleBy: waits for a step of a shutdown until a deadline, and no longer', () => {
  it('done when the work ends before the deadline', async () => {
    const outcome = settleBy(new Promise((r) => setTimeout(r, 500)), Date.now() + 1_000);
    await vi.advanceTimersByTimeAsync(500);
    await expect(outcome).resolves.toEqual({ state: 'done' });
  });

  it('late at the deadline when the work hangs (a dead database, a sink that never answers)', async () => {
    let state: string | undefined;
    void settleBy(new Promise(() => {}), Date.now() + 1_000).then((o) => {
      state = o.state;
    });
    await vi.advanceTimersByTimeAsync(999);
    expect(state).toBeUndefined();
    await vi.advanceTimersByTimeAsync(1);
    expect(state).toBe('late');
  });

  it('returns a failure instead of throwing, so the next step still runs', async () => {
    const error = new Error('connection refused');
    await expect(settleBy(Promise.reject(error), Date.now() + 1_000)).resolves.toEqual({ state: 'failed', error });
  });

  it('nothing to wait for is done; a deadline already past gives the work no time', async () => {
    await expect(settleBy(undefined, Date.now())).resolves.toEqual({ state: 'done' });
    const outcome = settleBy(new Promise(() => {}), Date.now() - 5);
    await vi.advanceTimersByTimeAsync(0);
    await expect(outcome).resolves.toEqual({ state: 'late' });
  });

  it('leaves no timer behind once the work is done; its timer keeps the process alive meanwhile', async () => {
    await settleBy(Promise.resolve(), Date.now() + 60_000);
    expect(vi.getTimerCount()).toBe(0);
    const spy = vi.spyOn(globalThis, 'setTimeout');
    void settleBy(new Promise(() => {}), Date.now() + 10);
    const timer = spy.mock.results.at(-1)?.value as NodeJS.Timeout;
    spy.mockRestore();
    expect(timer.hasRef()).toBe(true);
    await vi.advanceTimersByTimeAsync(10);
  });
});
