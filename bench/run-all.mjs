#!/usr/bin/env node
// bench/run-all.mjs — `npm run bench`: builds, runs every benchmark in bench/ one after the other
// (never in parallel: they would measure each other), and writes bench/REPORT.md (the machine, one
// summary table of events/s and p50/p99 latency per workload, every benchmark's own table with its
// baselines) and bench/chart.svg (events/s per workload, log scale).
//
//   npm run bench                      # full runs
//   npm run bench -- --quick           # short smoke runs (passed on to every benchmark)
//   node bench/run-all.mjs --only webhook,listen --timeout 900
//
// A benchmark is any bench/*.mjs other than this file (helpers: bench/lib/ or a leading "_"). Each
// prints a Markdown table and writes bench/results/<name>.md; when it did not write one, what it
// printed is used. Benchmarks that are missing, fail or time out are listed as such in the report.
//
// Every benchmark measures its baselines in the same run and states its pass/fail targets (✓/✗ in its
// tables) as ratios to them, never as absolute events/s (its head comment says which baseline each
// target is relative to); the report says so at the top.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { cpus, freemem, loadavg, release, totalmem } from 'node:os';
import { basename, dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { servicesEnv } from './lib/services.mjs';
import { fmt } from './lib/stats.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const flag = (name) => args.includes(name);
const option = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : fallback;
};

const quick = flag('--quick');
const benchDir = option('--bench-dir', join(ROOT, 'bench'));
const resultsDir = join(benchDir, 'results');
const reportFile = option('--report', join(benchDir, 'REPORT.md'));
const chartFile = join(dirname(reportFile), 'chart.svg');
const timeoutSec = Number(option('--timeout', quick ? '600' : '3600'));
const only =
  option('--only', '')
    ?.split(',')
    .map((s) => s.trim())
    .filter(Boolean) ?? [];

/** The benchmarks the project's issues ask for; a missing one is named in the report. */
const EXPECTED = ['listen', 'capture', 'webhook', 'brokers-kafka', 'brokers-amqp-redis', 'scheduler'];

// ---- machine ---------------------------------------------------------------------------------------

function osName() {
  try {
    const text = readFileSync('/etc/os-release', 'utf8');
    return /^PRETTY_NAME="?([^"\n]*)"?/m.exec(text)?.[1] ?? `Linux ${release()}`;
  } catch {
    return `${process.platform} ${release()}`;
  }
}

async function postgresVersion() {
  const url = servicesEnv().DATABASE_URL;
  if (url) {
    try {
      const { default: pg } = await import('pg');
      const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3_000 });
      await client.connect();
      try {
        const { rows } = await client.query(
          "SELECT current_setting('server_version') AS v, current_setting('fsync') AS fsync, current_setting('synchronous_commit') AS sc",
        );
        return `PostgreSQL ${rows[0].v} (test server: fsync=${rows[0].fsync}, synchronous_commit=${rows[0].sc}; benchmarks that start their own server say so)`;
      } finally {
        await client.end();
      }
    } catch {
      /* fall back to the binaries */
    }
  }
  for (const bin of ['/usr/lib/postgresql/15/bin/postgres', 'postgres']) {
    const r = spawnSync(bin, ['--version'], { encoding: 'utf8' });
    if (r.status === 0) return r.stdout.trim();
  }
  return 'PostgreSQL: not found';
}

function machine() {
  const cpu = cpus();
  return {
    cpu: cpu[0]?.model?.trim() ?? 'unknown CPU',
    cores: cpu.length,
    memory: `${(totalmem() / 2 ** 30).toFixed(1)} GiB (${(freemem() / 2 ** 30).toFixed(1)} GiB free at start)`,
    os: osName(),
    node: process.version,
  };
}

// ---- Markdown tables ------------------------------------------------------------------------------

function splitRow(line) {
  const cells = line
    .trim()
    .replace(/^\|/, '')
    .replace(/\|$/, '')
    .split(/(?<!\\)\|/);
  return cells.map((c) => c.trim());
}

/** Every pipe table in a Markdown text: { header: string[], rows: string[][] }. */
export function markdownTables(text) {
  const lines = text.split('\n');
  const tables = [];
  for (let i = 0; i + 1 < lines.length; i++) {
    if (!lines[i].trim().startsWith('|') || !/^\s*\|?\s*:?-{3,}/.test(lines[i + 1])) continue;
    const header = splitRow(lines[i]);
    const rows = [];
    let j = i + 2;
    for (; j < lines.length && lines[j].trim().startsWith('|'); j++) rows.push(splitRow(lines[j]));
    tables.push({ header, rows });
    i = j - 1;
  }
  return tables;
}

const number = (cell) => {
  const m = /^[~≈]?\s*([\d,.\s]+)(k)?\b/.exec(cell.replace(/\*\*/g, ''));
  if (!m) return Number.NaN;
  const n = Number(m[1].replace(/[,\s]/g, ''));
  return m[2] ? n * 1000 : n;
};

/**
 * Rows worth charting: those with a throughput cell (the first column whose header says "/s"),
 * labelled by the text cells before it, with p50/p99 when the table has them.
 */
export function throughputRows(text) {
  const out = [];
  for (const { header, rows } of markdownTables(text)) {
    const rate = header.findIndex((h) => /\/\s?s\b/i.test(h) && !/latency|\bms\b|cpu|µs/i.test(h));
    if (rate < 0) continue;
    const p50 = header.findIndex((h) => /p50/i.test(h));
    const p99 = header.findIndex((h) => /p99/i.test(h));
    for (const row of rows) {
      const value = number(row[rate] ?? '');
      if (!Number.isFinite(value) || value <= 0) continue;
      const label = row
        .slice(0, rate)
        .filter((c) => c !== '' && !Number.isFinite(number(c)))
        .join(' · ')
        .replace(/\*\*/g, '');
      // "p50 ms" headers with bare numbers: carry the unit into the summary.
      const latency = (i) => (i < 0 ? '' : /\bms\b/.test(header[i]) && /^[\d,.]+$/.test(row[i] ?? '') ? `${row[i]} ms` : (row[i] ?? ''));
      out.push({
        label: label || `row ${out.length + 1}`,
        unit: header[rate].replace(/\s*\(.*\)\s*$/, ''),
        value,
        p50: latency(p50),
        p99: latency(p99),
      });
    }
  }
  return out;
}

// ---- SVG chart -----------------------------------------------------------------------------------

const escapeXml = (s) => s.replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' })[c]);
const short = (n) => (n >= 1e6 ? `${+(n / 1e6).toFixed(1)}M` : n >= 1e3 ? `${+(n / 1e3).toFixed(1)}k` : `${+n.toFixed(1)}`);

/** Horizontal bars, grouped by benchmark, on a log scale (throughputs span 10/s to 1M/s). */
export function barChart(groups, title) {
  const values = groups.flatMap((g) => g.rows.map((r) => r.value));
  if (values.length === 0) return undefined;
  const lo = 10 ** Math.floor(Math.log10(Math.min(...values)));
  const hi = 10 ** Math.ceil(Math.log10(Math.max(...values) * 1.0001));
  const labelW = 460;
  const barW = 380;
  const rowH = 20;
  const width = labelW + barW + 90;
  const x = (v) => labelW + (Math.log10(v / lo) / Math.log10(hi / lo)) * barW;
  const palette = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#edc948', '#b07aa1', '#9c755f'];
  const parts = [];
  let y = 48;
  groups.forEach((g, gi) => {
    parts.push(`<text x="8" y="${y + 14}" font-weight="bold">${escapeXml(g.name)}</text>`);
    y += rowH;
    for (const r of g.rows) {
      const label = r.label.length > 70 ? `${r.label.slice(0, 69)}…` : r.label;
      parts.push(`<text x="${labelW - 8}" y="${y + 14}" text-anchor="end">${escapeXml(label)}</text>`);
      parts.push(
        `<rect x="${labelW}" y="${y + 3}" width="${Math.max(1, x(r.value) - labelW).toFixed(1)}" height="${rowH - 6}" ` +
          `fill="${palette[gi % palette.length]}"><title>${escapeXml(`${r.label}: ${fmt(r.value)} ${r.unit}`)}</title></rect>`,
      );
      parts.push(`<text x="${(x(r.value) + 4).toFixed(1)}" y="${y + 14}">${short(r.value)}</text>`);
      y += rowH;
    }
    y += 6;
  });
  const grid = [];
  for (let v = lo; v <= hi; v *= 10) {
    grid.push(`<line x1="${x(v).toFixed(1)}" y1="40" x2="${x(v).toFixed(1)}" y2="${y}" stroke="#ddd"/>`);
    grid.push(`<text x="${x(v).toFixed(1)}" y="36" text-anchor="middle" fill="#666">${short(v)}/s</text>`);
  }
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${y + 12}" viewBox="0 0 ${width} ${y + 12}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="#fff"/>
<text x="8" y="18" font-size="14" font-weight="bold">${escapeXml(title)}</text>
${grid.join('\n')}
${parts.join('\n')}
</svg>
`;
}

// ---- running --------------------------------------------------------------------------------------

function discover() {
  if (!existsSync(benchDir)) return [];
  return readdirSync(benchDir)
    .filter((f) => f.endsWith('.mjs') && f !== 'run-all.mjs' && !f.startsWith('_'))
    .map((f) => basename(f, '.mjs'))
    .filter((name) => only.length === 0 || only.includes(name))
    .sort((a, b) => {
      const ia = EXPECTED.indexOf(a);
      const ib = EXPECTED.indexOf(b);
      return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || a.localeCompare(b);
    });
}

function runBench(name) {
  return new Promise((resolve) => {
    const started = Date.now();
    const child = spawn(process.execPath, [join(benchDir, `${name}.mjs`), ...(quick ? ['--quick'] : [])], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'inherit'],
      env: process.env,
    });
    let stdout = '';
    child.stdout.on('data', (chunk) => {
      stdout += chunk;
      process.stdout.write(chunk);
    });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGTERM');
      setTimeout(() => child.kill('SIGKILL'), 10_000).unref();
    }, timeoutSec * 1000);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ name, code, signal, timedOut, stdout, seconds: (Date.now() - started) / 1000, started });
    });
  });
}

function resultText(run) {
  const file = join(resultsDir, `${run.name}.md`);
  if (existsSync(file) && statSync(file).mtimeMs >= run.started - 1000)
    return { text: readFileSync(file, 'utf8'), from: relative(dirname(reportFile), file) };
  return { text: run.stdout, from: 'its standard output' };
}

function demote(markdown) {
  // Each benchmark's own headings sit under "## <name>" in the report: its top level becomes ###.
  const levels = [...markdown.matchAll(/^(#{1,6}) /gm)].map((m) => m[1].length);
  if (levels.length === 0) return markdown.trim();
  const shift = 3 - Math.min(...levels);
  return markdown.replace(/^(#{1,6}) /gm, (_, hashes) => `${'#'.repeat(Math.min(6, Math.max(1, hashes.length + shift)))} `).trim();
}

async function main() {
  if (!flag('--no-build')) {
    process.stderr.write('building (npm run build) …\n');
    const build = spawnSync('npm', ['run', 'build'], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
    if (build.status !== 0) {
      process.stderr.write('npm run build failed: benchmarks import from dist/\n');
      process.exit(1);
    }
  }
  mkdirSync(resultsDir, { recursive: true });
  const host = machine();
  const pgVersion = await postgresVersion();
  const loadStart = loadavg()
    .map((l) => l.toFixed(1))
    .join(' ');
  const names = discover();
  const runs = [];
  for (const name of names) {
    process.stderr.write(`\n=== bench/${name}.mjs${quick ? ' --quick' : ''} ===\n`);
    runs.push(await runBench(name));
  }
  const loadEnd = loadavg()
    .map((l) => l.toFixed(1))
    .join(' ');
  const missing = EXPECTED.filter((n) => !names.includes(n) && (only.length === 0 || only.includes(n)));

  const summary = [];
  const groups = [];
  const sections = [];
  for (const run of runs) {
    const status = run.timedOut ? `timed out after ${timeoutSec} s` : run.code === 0 ? 'ok' : `failed (${run.signal ?? `exit ${run.code}`})`;
    const { text, from } = resultText(run);
    const rows = run.code === 0 ? throughputRows(text) : [];
    if (rows.length > 0) groups.push({ name: run.name, rows });
    for (const r of rows)
      summary.push(`| ${run.name} | ${r.label.replace(/\|/g, '\\|')} | ${fmt(r.value)} ${r.unit} | ${r.p50 || '—'} | ${r.p99 || '—'} |`);
    sections.push(
      `## ${run.name}\n\n\`node bench/${run.name}.mjs${quick ? ' --quick' : ''}\` — ${status}, ${run.seconds.toFixed(0)} s; table from ` +
        `${from}.\n\n${text.trim() ? demote(text) : '_(no output)_'}`,
    );
  }

  const chart = barChart(groups, `pg-sidekick throughput per workload (log scale)${quick ? ' — --quick runs' : ''}`);
  if (chart) writeFileSync(chartFile, chart);
  const date = new Date()
    .toISOString()
    .replace('T', ' ')
    .replace(/\.\d+Z$/, ' UTC');
  const report = [
    '# pg-sidekick benchmark report',
    '',
    `Generated by \`npm run bench${quick ? ' -- --quick' : ''}\` on ${date}.${quick ? ' **Quick smoke runs: short and noisy, not figures to quote.**' : ''}`,
    '',
    '## Machine',
    '',
    '| | |',
    '|---|---|',
    `| CPU | ${host.cpu}, ${host.cores} cores |`,
    `| Memory | ${host.memory} |`,
    `| OS | ${host.os} |`,
    `| Node.js | ${host.node} |`,
    `| PostgreSQL | ${pgVersion} |`,
    `| Load average (1/5/15 min) | ${loadStart} at start, ${loadEnd} at the end |`,
    '',
    'Every benchmark measures its baseline in the same run, on the same machine: compare the ratios, not absolute figures across machines. ' +
      'Pass/fail targets (✓/✗) are ratios to a baseline of the same run (such as "≥ 0.60× bare undici"), never absolute events/s, which ' +
      "say more about the load on the machine than about pg-sidekick; latency bounds (p99 ≤ … ms) are absolute. Each benchmark's head " +
      'comment names the baseline of each target.',
    '',
    '## Benchmarks run',
    '',
    '| benchmark | status | time |',
    '|---|---|---:|',
    ...runs.map(
      (r) =>
        `| [${r.name}](#${r.name}) | ${r.timedOut ? 'timed out' : r.code === 0 ? 'ok' : `failed (${r.signal ?? `exit ${r.code}`})`} | ` +
        `${r.seconds.toFixed(0)} s |`,
    ),
    ...missing.map((n) => `| ${n} | missing: bench/${n}.mjs does not exist in this checkout | — |`),
    '',
    ...(missing.length > 0
      ? [`**Not measured:** ${missing.map((n) => `bench/${n}.mjs`).join(', ')} (not present when this report was made).`, '']
      : []),
    '## Throughput and latency, every workload',
    '',
    ...(summary.length > 0
      ? [
          'One row per measured workload and contender (baselines included), taken from the tables below; p50/p99 as each benchmark reports them (see ' +
            'its notes for what the latency spans).',
          '',
          ...(chart ? [`![events/s per workload](${relative(dirname(reportFile), chartFile)})`, ''] : []),
          '| benchmark | workload · contender | throughput | p50 | p99 |',
          '|---|---|---:|---:|---:|',
          ...summary,
        ]
      : ['_No benchmark produced a throughput table._']),
    '',
    ...sections.flatMap((s) => [s, '']),
  ].join('\n');
  writeFileSync(reportFile, report);
  process.stderr.write(`\nwrote ${relative(process.cwd(), reportFile)}${chart ? ` and ${relative(process.cwd(), chartFile)}` : ''}\n`);
  const failed = runs.filter((r) => r.code !== 0 || r.timedOut);
  process.exit(failed.length > 0 ? 1 : 0);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  await main();
}
