// Runs scenarios one after another, each with its own temp dir and cleanups, and turns their
// verdicts into one table. Used by chaos/run.mjs and test/integration/chaos-quick.test.ts.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { scenarios } from '../scenarios/index.mjs';
import { within } from './util.mjs';

/** The scenarios `npm run chaos` runs: all, or those with quick: true under --quick; `only` filters by name. */
export function selectScenarios({ quick = false, only } = {}) {
  if (only?.length) {
    const unknown = only.filter((n) => !scenarios.some((s) => s.name === n));
    if (unknown.length) throw new Error(`unknown scenario(s): ${unknown.join(', ')} (known: ${scenarios.map((s) => s.name).join(', ')})`);
    return scenarios.filter((s) => only.includes(s.name));
  }
  return scenarios.filter((s) => !quick || s.quick);
}

/** Runs one scenario; never throws (an error becomes a failed row). */
export async function runScenario(scenario, { quick = false, keepDir = false, progress = () => {} } = {}) {
  const dir = mkdtempSync(join(tmpdir(), `sk-chaos-${scenario.name}-`));
  const cleanups = [];
  const ctx = {
    quick,
    dir,
    notes: [],
    failures: [],
    bridges: [],
    /** A duration: `full` ms in the full run, `short` ms in the quick one. */
    ms: (full, short = full) => (quick ? short : full),
    defer: (fn) => cleanups.push(fn),
    note: (text) => {
      ctx.notes.push(text);
      progress(`  ${scenario.name}: ${text}`);
    },
    fail: (text) => {
      ctx.failures.push(text);
      progress(`  ${scenario.name}: FAIL ${text}`);
    },
    progress: (text) => progress(`  ${scenario.name}: ${text}`),
  };
  const started = performance.now();
  let outcome;
  let error;
  try {
    outcome = await within(scenario.run(ctx), scenario.timeoutMs ?? 180_000, `scenario ${scenario.name}`);
  } catch (err) {
    error = err;
  }
  for (const fn of cleanups.reverse()) {
    try {
      await within(Promise.resolve().then(fn), 30_000, 'cleanup');
    } catch (err) {
      progress(`  ${scenario.name}: cleanup failed: ${err.message}`);
    }
  }
  const bridgeErrors = ctx.bridges.reduce((n, b) => n + b.state.errors, 0);
  if (error) {
    const tails = ctx.bridges.map((b) => `--- ${b.name} log (${dir}/${b.name}.log):\n${b.state.lines.slice(-8).join('\n')}`).join('\n');
    ctx.failures.push(`error: ${error.message.split('\n')[0]}`);
    progress(`  ${scenario.name}: ${error.stack}\n${tails}`);
  }
  const results = outcome?.results ?? [];
  for (const r of results) {
    if (r.lost) ctx.failures.push(`${r.sink} lost ${r.lost} (e.g. ${r.lostSample.join(', ')})`);
    if (r.order) ctx.failures.push(`${r.sink}: ${r.order} first-delivery order violation(s)`);
    if (r.unexpected) ctx.failures.push(`${r.sink}: ${r.unexpected} event(s) that must be dead-lettered were accepted`);
    if (r.phantom) ctx.failures.push(`${r.sink}: ${r.phantom} arrival(s) of versions never committed`);
  }
  if (outcome && !outcome.complete && results.every((r) => !r.lost)) ctx.failures.push('did not settle in time');
  if (!keepDir && !error && ctx.failures.length === 0) rmSync(dir, { recursive: true, force: true });
  else ctx.notes.push(`logs kept in ${dir}`);
  return {
    name: scenario.name,
    written: outcome?.written,
    results,
    recoveryMs: outcome?.recoveryMs,
    seconds: (performance.now() - started) / 1000,
    bridgeErrors,
    notes: ctx.notes,
    failures: ctx.failures,
    ok: ctx.failures.length === 0,
  };
}

export async function runScenarios(list, options = {}) {
  const rows = [];
  for (const scenario of list) {
    options.progress?.(`▶ ${scenario.name}: ${scenario.description}`);
    const row = await runScenario(scenario, options);
    options.progress?.(`${row.ok ? '✓' : '✗'} ${scenario.name} (${row.seconds.toFixed(1)} s)`);
    rows.push(row);
  }
  return rows;
}

const fmt = (n) => (n === undefined ? '—' : n.toLocaleString('en-US'));
const perSink = (results, field) => (results.length ? results.map((r) => `${r.sink} ${fmt(r[field])}`).join(' · ') : '—');
const sum = (results, field) => (results.length ? fmt(results.reduce((n, r) => n + r[field], 0)) : '—');

/** One Markdown table, then each scenario's notes and failures. */
export function formatTable(rows) {
  const head = ['scenario', 'written', 'delivered per sink', 'lost', 'duplicates', 'first-delivery order violations', 'time to recover', 'result'];
  const body = rows.map((r) => [
    r.name,
    fmt(r.written),
    perSink(r.results, 'delivered'),
    sum(r.results, 'lost'),
    perSink(r.results, 'duplicates'),
    sum(r.results, 'order'),
    r.recoveryMs === undefined ? '—' : `${(r.recoveryMs / 1000).toFixed(1)} s`,
    r.ok ? 'ok' : 'FAIL',
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => String(b[i]).length)));
  const line = (cells) => `| ${cells.map((c, i) => String(c).padEnd(widths[i])).join(' | ')} |`;
  const out = [line(head), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...body.map(line), ''];
  for (const r of rows) {
    const extra = [...r.notes];
    if (r.bridgeErrors) extra.push(`${r.bridgeErrors} error line(s) in the bridge logs`);
    if (extra.length === 0 && r.failures.length === 0) continue;
    out.push(`${r.name}:`);
    for (const n of extra) out.push(`  - ${n}`);
    for (const f of r.failures) out.push(`  - FAIL: ${f}`);
  }
  return out.join('\n');
}
