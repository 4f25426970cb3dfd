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
// DATABASE_URL (else the test services' env file, bench/lib/services.mjs) names the database. The bare
// client is bench/lib/bare-listener.mjs; medians come from bench/lib/stats.mjs. Prints a Markdown
// table and writes it to bench/results/listen.md.
//
// Target (pass/fail): `sidekick listen` delivers ≥ 0.80× the notifications/s end to end of the bare
// client in the same run (issue 2), for the burst and the sustained load; a ratio, since other work on
// the machine slows both alike. `listen -H` (more bytes per notification) and a C pglisten are shown
// for comparison, with no target.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { PG_BIN } from './lib/pg-server.mjs';
import { requireService, servicesEnv } from './lib/services.mjs';
import { fmt, medianOf, ratioTarget } from './lib/stats.mjs';

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

/** What `sidekick listen` must deliver, end to end, as a share of the bare client's notifications/s. */
const TARGET = 0.8;

function pgbenchPath() {
  return existsSync(`${PG_BIN}/pgbench`) ? `${PG_BIN}/pgbench` : 'pgbench';
}

const URL_ = requireService(servicesEnv(), 'DATABASE_URL');
const admin = new pg.Client({ connectionString: URL_ });
await admin.connect();

// The bare client (bench/lib/bare-listener.mjs): LISTEN, count, report. 'F' at the first notification,
// `D<count>\n` at the end (the N-th notification in a burst, the END marker in a sustained run).
const BARE = join(ROOT, 'bench/lib/bare-listener.mjs');

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
    argv = [process.execPath, [BARE, URL_, channel, String(target)]];
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

/** The target cell of a row: `sidekick listen`'s end-to-end ratio to the bare client; none for the others. */
const targetCell = (contender, ratio) => (contender === 'listen' ? ratioTarget(ratio, TARGET, 'bare') : '');

/** Table rows for the burst: every contender in turn, the order alternating between runs. */
async function burstSection() {
  const contenders = ['bare', 'listen', 'listen -H', ...(externalPglisten ? ['pglisten (C)'] : [])];
  const results = Object.fromEntries(contenders.map((c) => [c, []]));
  console.error(`burst of ${fmt(burstN)} notifications, ${runs} run(s) each`);
  for (let r = 0; r < runs; r++) {
    // Alternate the order so that neither side always runs on a warmer server.
    for (const c of r % 2 === 0 ? contenders : [...contenders].reverse()) {
      const result = await burstRun(c);
      results[c].push(result);
      console.error(`  ${c}: ${fmt(result.total)}/s end to end, ${fmt(result.delivery)}/s first→last`);
    }
  }
  const bareTotal = medianOf(results.bare, 'total');
  const bareDelivery = medianOf(results.bare, 'delivery');
  return contenders.map((c) => {
    const total = medianOf(results[c], 'total');
    const delivery = medianOf(results[c], 'delivery');
    return (
      `| burst ${fmt(burstN)} in 1 tx | ${c} | ${fmt(total)} | ${(total / bareTotal).toFixed(2)} | ${fmt(delivery)} | ` +
      `${(delivery / bareDelivery).toFixed(2)} | ${targetCell(c, total / bareTotal)} |`
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
  const bareTotal = medianOf(results.bare, 'total');
  return ['bare', 'listen'].map((c) => {
    const total = medianOf(results[c], 'total');
    const lag = medianOf(results[c], 'lagMs');
    const ratio = total / bareTotal;
    return `| sustained, pgbench -c 4 -T ${seconds} | ${c} | ${fmt(total)} | ${ratio.toFixed(2)} | lag ${fmt(lag)} ms | | ${targetCell(c, ratio)} |`;
  });
}

const rows = [...(only !== 'sustained' ? await burstSection() : []), ...(only !== 'burst' ? await sustainedSection() : [])];
await admin.end();

const table = [
  `### sidekick listen vs a bare node-postgres client (medians of ${runs} run${runs === 1 ? '' : 's'}${quick ? ', --quick' : ''})`,
  '',
  '| load | contender | notifications/s end to end | ratio vs bare | first→last byte /s (burst) or lag after load (sustained) | ratio vs bare | target |',
  '|---|---|---:|---:|---:|---:|---|',
  ...rows,
  '',
  'End to end: from the start of the sending transaction (or of pgbench) until the last notification arrived',
  'through the contender\'s stdout pipe. "listen" writes every payload (and with -H the channel and pid)',
  'to stdout; "bare" only counts. Lag: from the end of pgbench until the last notification arrived.',
  `Target: "listen" end to end ≥ ${TARGET.toFixed(2)}× the bare client of the same run (a ratio: other work on the machine slows both alike).`,
  `Node ${process.version}.`,
  '',
].join('\n');
process.stdout.write(table);
mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
writeFileSync(join(ROOT, 'bench/results/listen.md'), table);
