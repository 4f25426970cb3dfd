import { describe, expect, it } from 'vitest';
import { createScanBound } from '../../src/outbox/scan-bound.js';

const probe = (lastValue: number, xid: number) => ({ lastValue, xid: BigInt(xid) });
const fetch = (xmin: number, truncated = false, lastId?: number) => ({ xmin: BigInt(xmin), truncated, lastId });

describe('outbox scan bound', () => {
  it("moves past ids only once every transaction older than the probe's fresh xid has ended", () => {
    const b = createScanBound();
    b.probe(probe(50, 110)); // ids ≤ 50 were taken by transactions with xids below 110
    b.observe(fetch(100)); // xid 100 may still be running
    expect(b.floor).toBe(0);
    b.observe(fetch(109));
    expect(b.floor).toBe(0);
    b.probe(probe(70, 120));
    b.observe(fetch(110)); // everything below 110 ended: 50 is safe; 70 needs 120
    expect(b.floor).toBe(50);
    b.observe(fetch(125));
    expect(b.floor).toBe(70);
  });

  it('only counts what a truncated fetch covered', () => {
    const b = createScanBound();
    b.probe(probe(500, 10));
    b.observe(fetch(20, true, 300)); // 500 is safe, but only ids up to 300 were scanned
    expect(b.floor).toBe(300);
    b.observe(fetch(20, false));
    expect(b.floor).toBe(500);
  });

  it('never moves backwards and forgets everything on reset', () => {
    const b = createScanBound();
    b.probe(probe(20, 5));
    b.observe(fetch(6));
    expect(b.floor).toBe(20);
    b.probe(probe(10, 7));
    b.observe(fetch(8));
    expect(b.floor).toBe(20);
    b.reset();
    expect(b.floor).toBe(0);
    b.observe(fetch(99)); // the probes went with the reset
    expect(b.floor).toBe(0);
  });
});
