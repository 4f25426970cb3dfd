import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../support/services.js';

// bench/run-all.mjs against a bench directory of stand-in benchmarks (the real ones take minutes and
// belong to `npm run bench`): one that writes its results file, one that only prints, one that
// fails, and a helper module that must not be run.
describe('bench/run-all.mjs (report of every benchmark)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sidekick-bench-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('runs each bench with --quick, writes REPORT.md with the machine, a summary table and an SVG chart, and names failures and missing benches', () => {
    const bench = join(dir, 'bench');
    mkdirSync(bench);
    writeFileSync(
      join(bench, 'webhook.mjs'),
      `
import { mkdirSync, writeFileSync } from 'node:fs';
const quick = process.argv.includes('--quick');
const table = [
  '## Webhook sink' + (quick ? ' (--quick)' : ''),
  '',
  '| scenario | client | events | events/s | p50 ms | p99 ms | × sequential |',
  '|---|---|---:|---:|---:|---:|---:|',
  '| backlog → instant receiver | pg-sidekick (32 in flight) | 5,000 | 23,237 | 684.9 | 1,515.0 | 4.4× |',
  '| backlog → instant receiver | sequential (skor) | 1,000 | 5,155 | 226.9 | 460.6 | 1.0× |',
].join('\\n');
console.log(table);
mkdirSync(new URL('./results/', import.meta.url), { recursive: true });
writeFileSync(new URL('./results/webhook.md', import.meta.url), table + '\\n');
`,
    );
    writeFileSync(
      join(bench, 'scheduler.mjs'),
      `
console.log('| runner | jobs/s | × baseline |\\n|---|---:|---:|\\n| baseline: plain client | 1,086 | 1.00× |\\n| scheduler | 2,105 | 1.94× |');
`,
    );
    writeFileSync(join(bench, 'capture.mjs'), `console.error('capture: cannot reach the database'); process.exit(3);`);
    writeFileSync(join(bench, '_shared.mjs'), `throw new Error('a helper must not be run as a benchmark');`);

    const report = join(bench, 'REPORT.md');
    const run = spawnSync(
      process.execPath,
      [join(REPO_ROOT, 'bench', 'run-all.mjs'), '--bench-dir', bench, '--report', report, '--no-build', '--quick'],
      {
        cwd: REPO_ROOT,
        encoding: 'utf8',
        timeout: 60_000,
      },
    );
    expect(run.status).toBe(1); // one benchmark failed
    const text = readFileSync(report, 'utf8');

    expect(text).toContain(`| CPU | ${cpus()[0]!.model.trim()}, ${cpus().length} cores |`);
    expect(text).toContain(`| Node.js | ${process.version} |`);
    expect(text).toMatch(/\| PostgreSQL \| PostgreSQL 15\./);
    expect(text).toMatch(/Quick smoke runs/);
    expect(text).toContain('Pass/fail targets (✓/✗) are ratios to a baseline of the same run');
    expect(text).toMatch(/\| \[capture\]\(#capture\) \| failed \(exit 3\) \|/);
    for (const missing of ['listen', 'brokers-kafka', 'brokers-amqp-redis']) {
      expect(text).toContain(`| ${missing} | missing: bench/${missing}.mjs does not exist in this checkout | — |`);
    }
    expect(text).not.toContain('_shared');
    // One summary table across benchmarks, baselines included, with p50/p99 where reported.
    expect(text).toContain('| webhook | backlog → instant receiver · pg-sidekick (32 in flight) | 23,237 events/s | 684.9 ms | 1,515.0 ms |');
    expect(text).toContain('| webhook | backlog → instant receiver · sequential (skor) | 5,155 events/s | 226.9 ms | 460.6 ms |');
    expect(text).toContain('| scheduler | baseline: plain client | 1,086 jobs/s | — | — |');
    // Each benchmark's own table, under its own heading (from results/<name>.md when written).
    expect(text).toMatch(
      /## webhook\n\n`node bench\/webhook\.mjs --quick` — ok, \d+ s; table from results\/webhook\.md\.\n\n### Webhook sink \(--quick\)/,
    );
    expect(text).toMatch(/## scheduler\n\n.*table from its standard output/);
    expect(text).toContain('![events/s per workload](chart.svg)');

    const svg = readFileSync(join(bench, 'chart.svg'), 'utf8');
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    expect(svg.match(/<rect x=/g)).toHaveLength(4);
    expect(svg).toContain('sequential (skor): 5,155 events/s');
    expect(existsSync(join(bench, 'results', 'webhook.md'))).toBe(true);
  });
});

// Every benchmark computes its figures with bench/lib/stats.mjs, and states its targets as ratios to a
// baseline of the same run (issue 17 item 9).
describe('bench/lib/stats.mjs and the benchmarks that use it', () => {
  it('one median (mean of the middle two), one percentile (nearest rank), targets as ratios that fail when missing', async () => {
    const stats = await import(pathToFileURL(join(REPO_ROOT, 'bench', 'lib', 'stats.mjs')).href);
    expect(stats.median([3, 1, 2])).toBe(2);
    expect(stats.median([4, 1, 3, 2])).toBe(2.5);
    expect(stats.median([Number.NaN, 5])).toBe(5);
    expect(stats.median([])).toBeNaN();
    expect(stats.medianOf([{ eps: 10 }, { eps: 30 }, { eps: 20 }], 'eps')).toBe(20);
    const hundred = Array.from({ length: 100 }, (_, i) => i + 1);
    expect(stats.percentile(hundred, 0.5)).toBe(50);
    expect(stats.percentile(hundred, 0.99)).toBe(99);
    expect(stats.percentile([7], 0.99)).toBe(7);
    expect(stats.ratioTarget(0.62, 0.6, 'bare undici')).toBe('≥ 0.60× bare undici ✓');
    expect(stats.ratioTarget(0.59, 0.6, 'bare undici')).toBe('≥ 0.60× bare undici ✗');
    expect(stats.ratioTarget(Number.NaN, 0.6, 'bare undici')).toBe('≥ 0.60× bare undici ✗');
  });

  it('no benchmark defines its own median, percentile or number format, or prints an absolute events/s target', () => {
    const bench = join(REPO_ROOT, 'bench');
    const files = readdirSync(bench).filter((f) => f.endsWith('.mjs'));
    expect(files).toContain('rows.mjs');
    const found: string[] = [];
    for (const file of files) {
      readFileSync(join(bench, file), 'utf8')
        .split('\n')
        .forEach((line, i) => {
          const code = line.trim();
          if (code.startsWith('//') || code.startsWith('*')) return;
          if (/\b(const|let|function)\s+(median|percentile|mean|fmt)\b/.test(code)) found.push(`${file}:${i + 1} own helper: ${code}`);
          if (/≥ (\$\{[^}]*\}|[\d,]+)\/s/.test(code)) found.push(`${file}:${i + 1} absolute target: ${code}`);
        });
    }
    expect(found).toEqual([]);
  });
});
