import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createWakeup } from '../../src/wake.js';

describe('wake-ups (fake timers)', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  const settled = async (p: Promise<void>) => {
    let done = false;
    void p.then(() => {
      done = true;
    });
    await vi.advanceTimersByTimeAsync(0);
    return done;
  };

  it('a nap ends at its time, or at a wake-up, whichever comes first; every napper is woken', async () => {
    const w = createWakeup();
    const long = w.nap(60_000);
    const other = w.nap(60_000);
    expect(await settled(long)).toBe(false);
    w.wake();
    expect(await settled(long)).toBe(true);
    expect(await settled(other)).toBe(true);
    const short = w.nap(100);
    await vi.advanceTimersByTimeAsync(99);
    expect(await settled(short)).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(await settled(short)).toBe(true);
  });

  it('a wake-up that came while the loop was looking for work is not lost', async () => {
    const w = createWakeup();
    const seen = w.count;
    w.wake(); // a NOTIFY during the round
    expect(await settled(w.nap(60_000, seen))).toBe(true);
    expect(await settled(w.nap(60_000))).toBe(false);
  });

  it('an aborted signal ends every nap', async () => {
    const stop = new AbortController();
    const w = createWakeup(stop.signal);
    const nap = w.nap(60_000);
    stop.abort();
    expect(await settled(nap)).toBe(true);
    expect(await settled(w.nap(60_000))).toBe(true);
  });
});
