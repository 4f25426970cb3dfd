import { describe, expect, it } from 'vitest';
import { share } from '../../src/outbox/membership.js';
import { PARTITIONS } from '../../src/outbox/queries.js';

const all = Array.from({ length: PARTITIONS }, (_, i) => i);

describe('outbox membership: a fair share of the partitions (pure)', () => {
  it('one instance takes every partition, starting at its own offset', () => {
    const plan = share({ owned: [], releasing: [], members: 1, member: 1 });
    expect(plan.want).toBe(PARTITIONS);
    expect(plan.candidates[0]).toBe(7);
    expect([...plan.candidates].sort((a, b) => a - b)).toEqual(all);
  });

  it('a second instance arriving: the first releases its highest partitions beyond half, takes nothing', () => {
    const plan = share({ owned: all, releasing: [], members: 2, member: 0 });
    expect(plan.releasing).toEqual([8, 9, 10, 11, 12, 13, 14, 15]);
    expect(plan.want).toBe(0);
  });

  it('a partition being released is taken back before anything new when the other instance left', () => {
    const plan = share({ owned: all, releasing: [8, 9, 10, 11, 12, 13, 14, 15], members: 1, member: 0 });
    expect(plan.releasing).toEqual([]);
    expect(plan.want).toBe(0);
  });

  it('three instances: shares of 6, never more', () => {
    const plan = share({ owned: [0, 1, 2], releasing: [], members: 3, member: 2 });
    expect(plan.want).toBe(3);
    expect(plan.candidates).not.toContain(0);
  });
});
