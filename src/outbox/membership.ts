import type pg from 'pg';
import {
  BACKLOG_SINKS,
  LIVE_MEMBERS,
  LOCK_CLASS,
  MEMBER_SLOTS,
  PARTITIONS,
  RELEASE_PARTITION,
  TAKE_MEMBER_SLOT,
  TAKE_PARTITIONS,
} from './queries.js';

/**
 * Which key partitions this drain instance owns. Events are spread over PARTITIONS partitions; each
 * instance holds a member slot and some partitions under session advisory locks, a fair share of the
 * live instances, so one key is only ever drained by one instance, in id order (commit order for one
 * key). Everything an instance writes goes through the one connection that holds its locks: when it
 * loses the connection it loses the locks and cannot write anything afterwards.
 *
 * The decision (share()) is pure; join() and rebalance() do the locking on the drain's connection.
 */
export interface Membership {
  readonly member: number | undefined;
  /** Partitions owned, ascending. */
  owned(): number[];
  /** The partitions to read from: NULL (every one) when all are owned and none is being handed over. */
  active(): number[] | null;
  /** Takes a member slot on a fresh connection. */
  join(c: pg.Client): Promise<void>;
  /**
   * Hands over what is beyond a fair share (once `load(p)` is 0: nothing of it in flight here) and
   * takes what is missing. Returns the newly taken partitions and the sinks with backlog rows in them.
   */
  rebalance(c: pg.Client, load: (part: number) => number): Promise<{ taken: number[]; released: number[]; members: number; backlogs: string[] }>;
  /** The connection is gone, and the locks with it. */
  reset(): void;
}

/** What share() decides. */
export interface SharePlan {
  /** Partitions to stop reading from (they are handed over once nothing of them is in flight). */
  readonly releasing: readonly number[];
  /** How many partitions to try to take. */
  readonly want: number;
  /** Candidates to take, in the order to try them. */
  readonly candidates: readonly number[];
}

/**
 * A fair share of PARTITIONS among `members` live instances for instance `member`: keep up to the
 * share (lowest first), release the rest, take back released ones before new ones. Instances start at
 * an offset of their own, so that instances starting together do not all fight over 0, 1, 2 …
 */
export function share(state: { owned: readonly number[]; releasing: readonly number[]; members: number; member: number }): SharePlan {
  const fair = Math.ceil(PARTITIONS / Math.max(1, state.members));
  const releasing = new Set(state.releasing);
  const keep = state.owned.filter((p) => !releasing.has(p)).sort((a, b) => a - b);
  while (keep.length > fair) releasing.add(keep.pop() as number);
  while (keep.length < fair && releasing.size > 0) {
    const p = Math.min(...releasing);
    releasing.delete(p);
    keep.push(p);
  }
  const owned = new Set(state.owned);
  const offset = (state.member * 7) % PARTITIONS;
  const candidates = Array.from({ length: PARTITIONS }, (_, i) => (i + offset) % PARTITIONS).filter((p) => !owned.has(p));
  return { releasing: [...releasing].sort((a, b) => a - b), want: Math.max(0, fair - owned.size), candidates };
}

export function createMembership(): Membership {
  let member: number | undefined;
  const owned = new Set<number>();
  let releasing = new Set<number>();
  return {
    get member() {
      return member;
    },
    owned: () => [...owned].sort((a, b) => a - b),
    active() {
      if (owned.size === PARTITIONS && releasing.size === 0) return null;
      return [...owned].filter((p) => !releasing.has(p)).sort((a, b) => a - b);
    },
    async join(c) {
      const slot = await c.query<{ s: number }>(TAKE_MEMBER_SLOT, [LOCK_CLASS]);
      if (!slot.rows[0]) throw new Error(`more than ${MEMBER_SLOTS} drain instances on this database`);
      member = slot.rows[0].s;
    },
    async rebalance(c, load) {
      const live = (await c.query<{ slot: number }>(LIVE_MEMBERS)).rows.map((r) => r.slot);
      if (!live.includes(member as number)) throw new Error('lost the member lock');
      const plan = share({ owned: [...owned], releasing: [...releasing], members: live.length, member: member as number });
      releasing = new Set(plan.releasing);
      const released: number[] = [];
      for (const p of plan.releasing) {
        if (load(p) !== 0) continue;
        await c.query(RELEASE_PARTITION, [LOCK_CLASS, p]);
        releasing.delete(p);
        owned.delete(p);
        released.push(p);
      }
      let taken: number[] = [];
      let backlogs: string[] = [];
      if (plan.want > 0) {
        const { rows } = await c.query<{ p: number }>(TAKE_PARTITIONS, [LOCK_CLASS, plan.candidates, plan.want]);
        taken = rows.map((r) => r.p);
        for (const p of taken) owned.add(p);
        if (taken.length > 0) backlogs = (await c.query<{ sink: string }>(BACKLOG_SINKS, [taken])).rows.map((r) => r.sink);
      }
      return { taken, released, members: live.length, backlogs };
    },
    reset() {
      member = undefined;
      owned.clear();
      releasing = new Set();
    },
  };
}
