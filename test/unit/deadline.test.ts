import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { settleBy } from '../../src/deadline.js';

describe('settleBy: waits for a step of a shutdown until a deadline, and no longer', () => {
  beforeEach(() => { vi.useFakeTimers({ now: 1_000_000 }); });
  afterEach(() => { vi.useRealTimers(); });

  it('done when the work ends before the deadline', async () => {
    const outcome = settleBy(new Promise((r) => setTimeout(r, 500)), Date.now() + 1_000);
    await vi.advanceTimersByTimeAsync(500);
    await expect(outcome).resolves.toEqual({ state: 'done' });
  });

  it('late at the deadline when the work hangs (a dead database, a sink that never answers)', async () => {
    let state: string | undefined;
    void settleBy(new Promise(() => {}), Date.now() + 1_000).then((o) => { state = o.state; });
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

  it('leaves no timer behind once the work is done', async () => {
    await settleBy(Promise.resolve(), Date.now() + 60_000);
    expect(vi.getTimerCount()).toBe(0);
  });
});
