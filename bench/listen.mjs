#!/usr/bin/env node
// Notifications per second that `sidekick listen` delivers to stdout, side by side with a bare
// node-postgres client that only counts them, on the same database and the same load:
//   burst      — N notifications from one transaction (SELECT pg_notify(…) FROM generate_series(1, N));
//   sustained  — pgbench, 4 clients, transactions of 4 pg_notify each, for T seconds.
// Every contender runs as its own process and reports through a pipe that this script reads, so
// each figure is end to end: from the moment the load starts until the last byte has arrived.
//
//   npm run build && node bench/listen.mjs [--quick] [--runs=3] [--burst=1000000] [--seconds=10] [--only=burst|sustained]
//                                          [--pglisten=/path/to/C/pglisten]
//
// DATABASE_URL (else the test services' env file) names the database. Prints a Markdown table and
// writes it to bench/results/listen.md.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const CLI = join(ROOT, 'dist/src/cli.js');
const args = Object.fromEntries(
  process.argv.slice(2).map((a) => {
    const [k, v] = a.replace(/^--/, '').split('=');
    return [k, v ?? true];
  }),
);
const quick = Boolean(args.quick);
const runs = Number(args.runs ?? (quick ? 1 : 3));
const burstN = Number(args.burst ?? (quick ? 100_000 : 1_000_000));
const seconds = Number(args.seconds ?? (quick ? 2 : 10));
const externalPglisten = typeof args.pglisten === 'string' ? args.pglisten : undefined;
const only = typeof args.only === 'string' ? args.only : undefined; // burst | sustained

if (!existsSync(CLI)) {
  console.error('dist/ is missing: run `npm run build` first');
  process.exit(1);
}

function databaseUrl() {
  if (process.env.DATABASE_URL) return process.env.DATABASE_URL;
  const dir = process.env.SIDEKICK_SERVICES_DIR || '/var/tmp/pg-sidekick-services';
  try {
    const line = readFileSync(join(dir, 'env'), 'utf8')
      .split('\n')
      .find((l) => l.startsWith('DATABASE_URL='));
    if (line) return line.slice('DATABASE_URL='.length).trim();
  } catch {
    /* fall through */
  }
  console.error('set DATABASE_URL (or start the test services: scripts/services.sh up pg)');
  process.exit(1);
}

function pgbenchPath() {
  for (const p of ['/usr/lib/postgresql/15/bin/pgbench', '/usr/lib/postgresql/16/bin/pgbench', '/usr/lib/postgresql/17/bin/pgbench']) {
    if (existsSync(p)) return p;
  }
  return 'pgbench';
}

const URL_ = databaseUrl();
const admin = new pg.Client({ connectionString: URL_ });
await admin.connect();

// The bare client: LISTEN, count, report. 'F' at the first notification, `D<count>\n` at the end
// (the N-th notification in a burst, the END marker in a sustained run).
const BARE = `
import pg from 'pg';
const [url, channel, target] = process.argv.slice(1);
const c = new pg.Client({ connectionString: url, application_name: 'bench-bare' });
await c.connect();
let n = 0;
const N = Number(target);
c.on('notification', (m) => {
  if (++n === 1) process.stdout.write('F');
  if (n === N || m.payload === 'END') process.stdout.write('D' + (m.payload === 'END' ? n - 1 : n) + '\\n');
});
await c.query('LISTEN "' + channel + '"');
`;

// Every contender started, so that none outlives this script if a run fails.
const children = new Set();
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});

/** Starts a contender; resolves once its backend has LISTENed. */
async function startContender(kind, channel, target) {
  let argv;
  let appName = 'pglisten';
  if (kind === 'bare') {
    argv = [process.execPath, ['--input-type=module', '-e', BARE, URL_, channel, String(target)]];
    appName = 'bench-bare';
  } else if (kind === 'listen') argv = [process.execPath, [CLI, 'listen', '-d', URL_, '-l', channel]];
  else if (kind === 'listen -H') argv = [process.execPath, [CLI, 'listen', '-H', '-d', URL_, '-l', channel]];
  else argv = [externalPglisten, ['-d', URL_, '-l', channel]];
  const child = spawn(argv[0], argv[1], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  children.add(child);
  child.once('exit', () => children.delete(child));
  const deadline = Date.now() + 20_000;
  for (;;) {
    const { rows } = await admin.query(
      `SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND state = 'idle' AND query ILIKE 'LISTEN %' AND query LIKE $2`,
      [appName, `%${channel}%`],
    );
    if (rows.length > 0) break;
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`${kind} did not start listening`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return child;
}

/**
 * Watches a contender's stdout. `done(chunks, total)` decides when everything has arrived.
 * Resolves with the time of the first and of the last byte.
 */
function watch(child, done) {
  return new Promise((resolve, reject) => {
    let first;
    let total = 0;
    const chunks = [];
    child.stdout.on('data', (d) => {
      const now = performance.now();
      first ??= now;
      total += d.length;
      chunks.push(d);
      if (done(chunks, total)) resolve({ first, last: now, chunks });
    });
    child.once('exit', (code) => reject(new Error(`contender exited early (${code})`)));
  });
}

async function stop(child) {
  if (child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
}

const channelName = () => `bench_${Math.random().toString(36).slice(2, 10)}`;

async function burstRun(kind) {
  const channel = channelName();
  const child = await startContender(kind, channel, burstN);
  let bytes = 0;
  for (let i = 1; i <= burstN; i++) bytes += String(i).length + 1;
  const senderPid = (await admin.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
  if (kind === 'listen -H') bytes += burstN * `${channel}: (${senderPid}) `.length;
  const watching = kind === 'bare' ? watch(child, (chunks) => chunks.at(-1).toString().endsWith('\n')) : watch(child, (_, total) => total >= bytes);
  const t0 = performance.now();
  await admin.query(`SELECT count(pg_notify($1, i::text)) FROM generate_series(1, ${burstN}) i`, [channel]);
  const { first, last, chunks } = await watching;
  await stop(child);
  const out = Buffer.concat(chunks).toString();
  // Check what arrived (outside the timing): the count, or every line in order.
  if (kind === 'bare') {
    if (!out.endsWith(`D${burstN}\n`)) throw new Error(`bare client reported ${out}`);
  } else {
    const prefix = kind === 'listen -H' ? `${channel}: (${senderPid}) ` : '';
    let want = '';
    for (let i = 1; i <= burstN; i++) want += `${prefix}${i}\n`;
    if (out !== want) throw new Error(`${kind}: output differs from the ${burstN} expected lines`);
  }
  return { total: burstN / ((last - t0) / 1000), delivery: burstN / ((last - first) / 1000) };
}

function runPgbench(argv) {
  return new Promise((resolve, reject) => {
    const child = spawn(pgbenchPath(), argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => {
      stdout += d;
    });
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    child.on('error', reject);
    child.on('exit', (status) => resolve({ status, stdout, stderr }));
  });
}

/**
 * One pgbench run with every contender listening at once: the same stream for all; each one's rate
 * is what it delivered divided by the time until its last byte arrived, and the lag says how far
 * behind the load it was when pgbench ended.
 */
async function sustainedRun(kinds, dir) {
  const channel = channelName();
  const script = join(dir, `${channel}.sql`);
  writeFileSync(
    script,
    ['\\set n random(1, 1000000000)', 'BEGIN;', ...[1, 2, 3, 4].map((k) => `SELECT pg_notify('${channel}', :n || '-${k}');`), 'COMMIT;', ''].join(
      '\n',
    ),
  );
  const procs = [];
  for (const kind of kinds) procs.push(await startContender(kind, channel, 0));
  const watching = kinds.map((kind, i) =>
    kind === 'bare'
      ? watch(procs[i], (chunks) => /D\d+\n$/.test(chunks.at(-1).toString()))
      : watch(procs[i], (chunks) => chunks.at(-1).toString().endsWith('END\n')),
  );
  const t0 = performance.now();
  // Asynchronously: this process must keep reading the contenders' pipes while pgbench runs.
  const bench = await runPgbench(['-n', '-c', '4', '-j', '2', '-T', String(seconds), '-f', script, URL_]);
  const tBenchEnd = performance.now();
  if (bench.status !== 0) throw new Error(`pgbench failed: ${bench.stderr}`);
  const sent = 4 * Number(/number of transactions actually processed: (\d+)/.exec(bench.stdout)?.[1]);
  await admin.query(`SELECT pg_notify($1, 'END')`, [channel]);
  const results = {};
  for (const [i, kind] of kinds.entries()) {
    const { last, chunks } = await watching[i];
    await stop(procs[i]);
    const out = Buffer.concat(chunks).toString();
    const delivered = kind === 'bare' ? Number(/D(\d+)\n$/.exec(out)?.[1]) : out.split('\n').length - 2; // minus END and ''
    if (delivered !== sent) throw new Error(`${kind}: ${delivered} delivered, ${sent} sent`);
    results[kind] = { total: delivered / ((last - t0) / 1000), lagMs: last - tBenchEnd, sent };
  }
  return results;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const fmt = (x) => Math.round(x).toLocaleString('en-US');

/** Table rows for the burst: every contender in turn, the order alternating between runs. */
async function burstSection() {
  const contenders = ['bare', 'listen', 'listen -H', ...(externalPglisten ? ['pglisten (C)'] : [])];
  const results = Object.fromEntries(contenders.map((c) => [c, []]));
  console.error(`burst of ${burstN.toLocaleString('en-US')} notifications, ${runs} run(s) each`);
  for (let r = 0; r < runs; r++) {
    // Alternate the order so that neither side always runs on a warmer server.
    for (const c of r % 2 === 0 ? contenders : [...contenders].reverse()) {
      const result = await burstRun(c);
      results[c].push(result);
      console.error(`  ${c}: ${fmt(result.total)}/s end to end, ${fmt(result.delivery)}/s first→last`);
    }
  }
  const bareTotal = median(results.bare.map((x) => x.total));
  const bareDelivery = median(results.bare.map((x) => x.delivery));
  return contenders.map((c) => {
    const total = median(results[c].map((x) => x.total));
    const delivery = median(results[c].map((x) => x.delivery));
    return (
      `| burst ${burstN.toLocaleString('en-US')} in 1 tx | ${c} | ${fmt(total)} | ${(total / bareTotal).toFixed(2)} | ${fmt(delivery)} | ` +
      `${(delivery / bareDelivery).toFixed(2)} |`
    );
  });
}

/** Table rows for the sustained load: both contenders listen to the same pgbench run. */
async function sustainedSection() {
  const dir = mkdtempSync(join(tmpdir(), 'bench-listen-'));
  const results = { bare: [], listen: [] };
  console.error(`sustained: pgbench -c 4 -T ${seconds}, 4 pg_notify per transaction, both contenders listening at once, ${runs} run(s)`);
  try {
    for (let r = 0; r < runs; r++) {
      const result = await sustainedRun(r % 2 === 0 ? ['bare', 'listen'] : ['listen', 'bare'], dir);
      for (const c of ['bare', 'listen']) {
        results[c].push(result[c]);
        console.error(
          `  ${c}: ${fmt(result[c].total)}/s delivered (${fmt(result[c].sent)} sent), last one ${Math.round(result[c].lagMs)} ms after pgbench ended`,
        );
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const bareTotal = median(results.bare.map((x) => x.total));
  return ['bare', 'listen'].map((c) => {
    const total = median(results[c].map((x) => x.total));
    const lag = median(results[c].map((x) => x.lagMs));
    return `| sustained, pgbench -c 4 -T ${seconds} | ${c} | ${fmt(total)} | ${(total / bareTotal).toFixed(2)} | lag ${Math.round(lag)} ms | |`;
  });
}

const rows = [...(only !== 'sustained' ? await burstSection() : []), ...(only !== 'burst' ? await sustainedSection() : [])];
await admin.end();

const table = [
  `### sidekick listen vs a bare node-postgres client (medians of ${runs} run${runs === 1 ? '' : 's'}${quick ? ', --quick' : ''})`,
  '',
  '| load | contender | notifications/s end to end | ratio vs bare | first→last byte /s (burst) or lag after load (sustained) | ratio vs bare |',
  '|---|---|---:|---:|---:|---:|',
  ...rows,
  '',
  'End to end: from the start of the sending transaction (or of pgbench) until the last notification arrived',
  'through the contender\'s stdout pipe. "listen" writes every payload (and with -H the channel and pid)',
  'to stdout; "bare" only counts. Lag: from the end of pgbench until the last notification arrived.',
  `Node ${process.version}.`,
  '',
].join('\n');
process.stdout.write(table);
mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
writeFileSync(join(ROOT, 'bench/results/listen.md'), table);
