// The verdict: what each sink got against what was committed.
//   lost        a committed (key, version) that never arrived (and was not meant to be dead-lettered)
//   duplicates  arrivals beyond the first of a (key, version)
//   order       first-delivery order violations: for one key, the first arrival of version n+1
//               before the first arrival of version n
import { readTruthWhenUp } from './db.mjs';
import { now, sleep } from './util.mjs';

/** `excluded`: Map key → Set of versions that must NOT arrive (dead-lettered on purpose). */
export function analyze(truth, log, excluded = new Map()) {
  const first = new Map(); // "key:v" → index of first arrival
  let phantom = 0;
  log.arrivals.forEach((a, i) => {
    const max = truth.get(a.key);
    if (max === undefined || a.v < 1 || a.v > max) {
      phantom++;
      return;
    }
    const k = `${a.key}:${a.v}`;
    if (!first.has(k)) first.set(k, i);
  });
  let written = 0;
  let lost = 0;
  let order = 0;
  let unexpected = 0;
  const lostSample = [];
  for (const [key, max] of truth) {
    const skip = excluded.get(key);
    for (let v = 1; v <= max; v++) {
      if (skip?.has(v)) {
        if (first.has(`${key}:${v}`)) unexpected++;
        continue;
      }
      written++;
      const at = first.get(`${key}:${v}`);
      if (at === undefined) {
        lost++;
        if (lostSample.length < 5) lostSample.push(`${key}@${v}`);
        continue;
      }
      const next = v < max && !skip?.has(v + 1) ? first.get(`${key}:${v + 1}`) : undefined;
      if (next !== undefined && next < at) order++;
    }
  }
  const arrivals = log.arrivals.length - phantom;
  return {
    sink: log.name,
    written,
    delivered: first.size,
    arrivals,
    lost,
    duplicates: arrivals - first.size,
    order,
    phantom,
    unexpected,
    lostSample,
  };
}

/** True when every log has every committed (key, version) of `truth` not in `excluded`. */
export function complete(truth, logs, excluded = new Map()) {
  for (const log of logs) {
    for (const [key, max] of truth) {
      const skip = excluded.get(key);
      for (let v = 1; v <= max; v++) if (!skip?.has(v) && !log.has(key, v)) return false;
    }
  }
  return true;
}

/**
 * Time to recover: from `since` (the end of the fault), reads what was committed by then (as soon as
 * the database answers) and waits until every log has all of it. Resolves with ms, or undefined when
 * `timeoutMs` passes first.
 */
export async function timeToRecover(dbUrl, logs, { since = now(), excluded, timeoutMs = 60_000 } = {}) {
  const truth = await readTruthWhenUp(dbUrl, timeoutMs);
  const deadline = since + timeoutMs;
  while (now() < deadline) {
    await Promise.all(logs.map((l) => l.poll()));
    if (complete(truth, logs, excluded)) return Math.round(now() - since);
    await sleep(50);
  }
  return undefined;
}

/**
 * After the writers stopped: waits (bounded) until every log has everything committed, then analyzes.
 * Returns { truth, written, results: [analysis per log], settledMs }.
 */
export async function settle(dbUrl, logs, { excluded, timeoutMs = 60_000, quietMs = 1_000, extraTruth } = {}) {
  const truth = await readTruthWhenUp(dbUrl, timeoutMs);
  // Extra truth (the NOTIFY flood's keys) applies to the logs that receive it (log.extra = true).
  const truthOf = (log) => (extraTruth && log.extra ? new Map([...truth, ...extraTruth]) : truth);
  const t0 = now();
  let done = false;
  while (now() - t0 < timeoutMs) {
    await Promise.all(logs.map((l) => l.poll()));
    if (logs.every((l) => complete(truthOf(l), [l], excluded))) {
      done = true;
      break;
    }
    await sleep(100);
  }
  // Let late duplicates (re-sends after a crash still in flight) land before counting.
  if (done) {
    await sleep(quietMs);
    await Promise.all(logs.map((l) => l.poll()));
  }
  const results = logs.map((l) => analyze(truthOf(l), l, excluded));
  let written = 0;
  for (const max of truth.values()) written += max;
  return { truth, written, results, settledMs: Math.round(now() - t0), complete: done };
}
