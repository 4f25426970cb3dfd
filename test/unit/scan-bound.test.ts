import { describe, expect, it } from 'vitest';
import { createScanBound } from '../../src/outbox/scan-bound.js';

const f = (xmin: number, xmax: number, lastValue: number, truncated = false, lastId?: number) =>
  ({ xmin: BigInt(xmin), xmax: BigInt(xmax), lastValue, truncated, lastId });

describe('outbox scan bound', () => {
  it('moves past ids only once every transaction that could hold them has ended', () => {
    const b = createScanBound();
    b.observe(f(100, 105, 50)); // ids ≤ 50 taken by transactions < the next snapshot's xmax
    expect(b.floor).toBe(0);
    b.observe(f(100, 110, 60)); // candidate (50, xmax 110); xmin 100 < 110: some may still run
    expect(b.floor).toBe(0);
    b.observe(f(109, 112, 70)); // still one running below 110
    expect(b.floor).toBe(0);
    b.observe(f(110, 115, 80)); // all below 110 ended: 50 is safe; 60 needs xmin ≥ 112
    expect(b.floor).toBe(50);
    b.observe(f(120, 120, 90)); // no transaction running at all: even 80 (read by the last fetch) is safe
    expect(b.floor).toBe(80);
  });

  it('only counts what a truncated fetch covered', () => {
    const b = createScanBound();
    b.observe(f(100, 101, 500));
    b.observe(f(202, 202, 900, true, 300)); // 500 is safe, but only ids up to 300 were scanned
    expect(b.floor).toBe(300);
    b.observe(f(300, 301, 900, false)); // the rest of 500 now; 900 needs xmin ≥ 301
    expect(b.floor).toBe(500);
    b.observe(f(400, 401, 950));
    expect(b.floor).toBe(900);
  });

  it('never moves backwards and forgets everything on reset', () => {
    const b = createScanBound();
    b.observe(f(1, 2, 10));
    b.observe(f(7, 7, 20));
    expect(b.floor).toBe(10);
    b.observe(f(7, 7, 5));
    expect(b.floor).toBe(20);
    b.observe(f(7, 7, 5));
    expect(b.floor).toBe(20);
    b.reset();
    expect(b.floor).toBe(0);
    b.observe(f(9, 9, 99));
    expect(b.floor).toBe(0);
  });
});
