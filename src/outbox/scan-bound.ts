/**
 * A safe lower bound for outbox scans, so the drain does not walk the dead rows it deleted a moment
 * ago on every fetch (and does not have to exclude every event it holds in memory).
 *
 * A "last id" cursor would lose events: ids are taken before commit, so a lower id can become
 * visible after a higher one. This bound is only advanced past ids that provably can no longer
 * appear:
 *
 * 1. A probe reads the sequence's last value M, then — in a later transaction of its own — takes a
 *    fresh transaction id X with pg_current_xact_id(). Every id ≤ M was handed out before M was
 *    read, by a transaction that already had its xid (capture triggers run after the row write;
 *    sidekick.publish takes its xid first; the sequence has CACHE 1). Xids are handed out in order,
 *    so each of those xids is below X.
 * 2. A later fetch whose snapshot has xmin ≥ X sees every transaction below X as finished (X
 *    itself committed before that snapshot, so X < its xmax and every running xid below X would
 *    hold its xmin down): their rows are visible, or were rolled back. Having scanned all visible
 *    rows above the old bound up to its coverage (everything, or up to its last row if it hit its
 *    limit), that fetch leaves nothing unseen at or below min(M, coverage): the new bound.
 *
 * (A snapshot's own xmax is not enough for step 1: it is the latest *completed* xid + 1, so the
 * newest transactions, still running, can lie above it.)
 *
 * Events at or below the bound that are still in memory are tracked by the drain itself.
 */
export interface Probe {
  /** The sequence's last handed-out value (0 if none yet). */
  readonly lastValue: number;
  /** A transaction id taken after `lastValue` was read, in a transaction of its own (committed). */
  readonly xid: bigint;
}

export interface FetchObservation {
  /** xmin of the fetch's snapshot (xid8). The fetch started after every probe given so far. */
  readonly xmin: bigint;
  /** The fetch hit its limit: it covers ids only up to `lastId`. */
  readonly truncated: boolean;
  readonly lastId: number | undefined;
}

export interface ScanBound {
  /** Every id at or below this is known: in memory, settled, or never to appear. */
  readonly floor: number;
  probe(probe: Probe): void;
  observe(fetch: FetchObservation): void;
  /** Forget everything (new partitions, a new connection). */
  reset(): void;
}

const MAX_PROBES = 256;

export function createScanBound(): ScanBound {
  let floor = 0;
  let probes: Probe[] = [];
  return {
    get floor() {
      return floor;
    },
    probe(p) {
      probes.push(p);
      if (probes.length > MAX_PROBES) probes = probes.slice(-MAX_PROBES);
    },
    observe(f) {
      const coverage = f.truncated && f.lastId !== undefined ? f.lastId : Number.POSITIVE_INFINITY;
      const kept: Probe[] = [];
      for (const p of probes) {
        if (f.xmin >= p.xid) {
          const bound = Math.min(p.lastValue, coverage);
          if (bound > floor) floor = bound;
          if (bound >= p.lastValue) continue;
        }
        kept.push(p);
      }
      probes = kept;
    },
    reset() {
      floor = 0;
      probes = [];
    },
  };
}
