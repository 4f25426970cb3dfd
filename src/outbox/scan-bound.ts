/**
 * A safe lower bound for outbox scans, so the drain does not walk the dead rows it deleted a moment
 * ago on every fetch (and does not have to exclude every event it holds in memory).
 *
 * A "last id" cursor would lose events: ids are taken before commit, so a lower id can become
 * visible after a higher one. This bound is only advanced past ids that provably can no longer
 * appear:
 *
 * 1. Fetch k reads the sequence's last value M_k *after* its snapshot was taken. Every id ≤ M_k
 *    was handed out before that, by a transaction that already had its xid (capture triggers run
 *    after the row write; sidekick.publish takes its xid first; the sequence has CACHE 1).
 * 2. Fetch k+1's snapshot is taken after fetch k finished, so each of those xids is below its
 *    xmax, X_{k+1}.
 * 3. A later fetch j whose snapshot has xmin ≥ X_{k+1} sees every one of those transactions as
 *    finished: their rows are visible (or were rolled back). Having scanned all visible rows above
 *    the old bound up to its coverage (everything, or up to its last row if it hit the LIMIT), fetch
 *    j leaves nothing unseen at or below min(M_k, coverage): that becomes the new bound.
 *
 * Events at or below the bound that are still in memory are tracked by the drain itself.
 */
export interface FetchObservation {
  /** xmin and xmax of the fetch's snapshot (xid8). */
  readonly xmin: bigint;
  readonly xmax: bigint;
  /** The sequence's last handed-out value, read during the fetch (0 if none yet). */
  readonly lastValue: number;
  /** The fetch returned a full batch: it covers ids only up to `lastId`. */
  readonly truncated: boolean;
  readonly lastId: number | undefined;
}

export interface ScanBound {
  /** Every id at or below this is known: in memory, settled, or never to appear. */
  readonly floor: number;
  observe(fetch: FetchObservation): void;
  /** Forget everything (new partitions, a new connection). */
  reset(): void;
}

const MAX_CANDIDATES = 256;

export function createScanBound(): ScanBound {
  let floor = 0;
  let pending: number | undefined;
  let candidates: { m: number; xmax: bigint }[] = [];
  return {
    get floor() { return floor; },
    observe(f) {
      if (pending !== undefined) {
        candidates.push({ m: pending, xmax: f.xmax });
        if (candidates.length > MAX_CANDIDATES) candidates = candidates.slice(-MAX_CANDIDATES);
      }
      const coverage = f.truncated && f.lastId !== undefined ? f.lastId : Number.POSITIVE_INFINITY;
      const kept: typeof candidates = [];
      for (const c of candidates) {
        if (f.xmin >= c.xmax) {
          const bound = Math.min(c.m, coverage);
          if (bound > floor) floor = bound;
          if (bound >= c.m) continue;
        }
        kept.push(c);
      }
      candidates = kept;
      pending = f.lastValue;
    },
    reset() {
      floor = 0;
      pending = undefined;
      candidates = [];
    },
  };
}
