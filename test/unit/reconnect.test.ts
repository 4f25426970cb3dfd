import { describe, expect, it } from 'vitest';
import { RECONNECT_MAX_MS, reconnectDelay } from '../../src/wait.js';

// Issue 16 item 6: after a 25 s outage the backoff had grown to ~23 s (cap 30 s, +15% jitter above
// it), so /readyz came back ~20 s after the database. The cap is what an outage costs on top of
// itself: the wait after the last failed attempt.
const lowest = () => 0;
const highest = () => 0.999_999;

describe('reconnectDelay: capped, jittered backoff (randomness injected, no sleeps)', () => {
  it('one shared cap, short enough to be ready again within ~5 s of the database', () => {
    expect(RECONNECT_MAX_MS).toBeGreaterThanOrEqual(1_000);
    // Leaves ≥ 1.5 s of the 5 s for connecting, LISTEN and the first drain round.
    expect(RECONNECT_MAX_MS).toBeLessThanOrEqual(3_500);
  });

  it('never waits longer than the cap, whatever the attempt and the jitter', () => {
    for (let attempt = 0; attempt <= 100; attempt++) {
      expect(reconnectDelay(attempt, undefined, highest)).toBeLessThanOrEqual(RECONNECT_MAX_MS);
      expect(reconnectDelay(attempt, 30_000, highest)).toBeLessThanOrEqual(30_000);
    }
    expect(reconnectDelay(1_000, undefined, highest)).toBe(RECONNECT_MAX_MS);
  });

  it('the default cap is RECONNECT_MAX_MS', () => {
    expect(reconnectDelay(50, undefined, highest)).toBe(reconnectDelay(50, RECONNECT_MAX_MS, highest));
  });

  it('keeps its jitter at the cap (many bridges do not knock in step), only ever shorter', () => {
    const low = reconnectDelay(50, undefined, lowest);
    const high = reconnectDelay(50, undefined, highest);
    expect(low).toBe(Math.round(RECONNECT_MAX_MS * 0.85));
    expect(high).toBe(RECONNECT_MAX_MS);
    expect(reconnectDelay(50, undefined, () => 0.5)).toBeGreaterThan(low);
  });

  it('grows 50 ms·e^attempt with ±15% jitter below the cap', () => {
    expect(reconnectDelay(0, undefined, () => 0.5)).toBe(50);
    expect(reconnectDelay(1, undefined, () => 0.5)).toBe(Math.round(50 * Math.E));
    expect(reconnectDelay(2, undefined, lowest)).toBe(Math.round(50 * Math.exp(2) * 0.85));
    expect(reconnectDelay(2, undefined, highest)).toBe(Math.round(50 * Math.exp(2) * 1.15));
    const waits = [1, 2, 3, 4].map((a) => reconnectDelay(a, undefined, () => 0.5));
    expect(waits).toEqual([...waits].sort((a, b) => a - b));
  });

  it('an outage of 25 s costs at most the cap after the database is back (simulated clock)', () => {
    // The attempts a connection makes while the database is down 25 s (each failing at once, as a
    // refused connection does), with the longest jitter: the wait in progress when it comes back.
    let clock = 0;
    let attempt = 0;
    let waitAfterBack = 0;
    while (clock < 25_000) {
      attempt++;
      const wait = reconnectDelay(attempt, undefined, highest);
      if (clock + wait >= 25_000) waitAfterBack = clock + wait - 25_000;
      clock += wait;
    }
    expect(waitAfterBack).toBeLessThanOrEqual(RECONNECT_MAX_MS);
  });
});
