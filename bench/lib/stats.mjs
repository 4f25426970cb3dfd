// Statistics, formatting and pass/fail helpers shared by the benchmarks: every bench/*.mjs takes its
// median, percentile and number format from here, so the figures in bench/REPORT.md are computed the
// same way everywhere.
import { readFileSync } from 'node:fs';

/** Median of the finite values (mean of the middle two for an even count); NaN when none. */
export function median(xs) {
  const s = xs.filter(Number.isFinite).sort((a, b) => a - b);
  if (s.length === 0) return Number.NaN;
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** The median of one field of each item (`medianOf(runs, 'eps')`). */
export const medianOf = (items, key) => median(items.map((x) => x[key]));

/** The p-quantile (0‥1) of an ascending array (nearest rank). */
export function percentile(sorted, p) {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))];
}

/** A number with thousands separators and `digits` decimals; "n/a" for NaN/undefined. */
export function fmt(n, digits = 0) {
  return Number.isFinite(n) ? n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits }) : 'n/a';
}

/** ✓ or ✗. */
export const mark = (ok) => (ok ? '✓' : '✗');

/**
 * A pass/fail target as a table cell, "≥ 0.60× bare undici ✓": `ratio` is the contender's figure ÷
 * its baseline's, both measured in the same run. Targets are ratios, never absolute events/s: load
 * from other work on the machine moves the baseline as much as the contender, so the ratio says
 * something about pg-sidekick and an absolute figure mostly says how busy the machine was. A
 * missing ratio (NaN) fails.
 */
export function ratioTarget(ratio, min, baseline) {
  return `≥ ${min.toFixed(2)}× ${baseline} ${mark(Number.isFinite(ratio) && ratio >= min)}`;
}

/** Wall-clock milliseconds with sub-millisecond resolution, comparable across processes on one machine. */
export const clock = () => performance.timeOrigin + performance.now();

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * This process's main thread so far (Linux: /proc/self/task/<pid>/schedstat, in ms): `run` = time on
 * a CPU, `wait` = time it was ready to run but waited for a CPU (other processes had them). Against
 * wall time they tell whether the event loop was the bottleneck (run ≈ 100 %), was starved of CPU
 * (wait), or waited on the other processes (the rest). Undefined where there is no such file.
 */
export function mainThreadSched() {
  try {
    const [run, wait] = readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'utf8').trim().split(' ').map(Number);
    return { run: run / 1e6, wait: wait / 1e6 };
  } catch {
    return undefined;
  }
}
