#!/usr/bin/env node
// The scheduler, measured:
//   throughput — 1 000 trivial jobs (one-row INSERTs) due at once in sidekick.schedules: jobs/s from
//                the commit that made them due until the last one ran, against the same 1 000
//                statements sent one by one by a plain client (the baseline: no claiming, no
//                bookkeeping, no history);
//   timing     — jobs arriving at 100 per second, each due 300 ms after it was inserted (or, through
//                the pglater channel, "1 <sql>" notifications): actual start minus due time, p50/p99,
//                against an in-process setTimeout firing the same INSERT at the due time (the floor).
//
//   npm run build && node bench/scheduler.mjs [--quick] [--runs=3] [--seconds=5] [--database=URL]
//
// Without --database it starts its own PostgreSQL 15 (bench/lib/pg-server.mjs) with the durable
// settings (fsync and synchronous_commit on), because the test services run with fsync off.
//
// Targets (pass/fail):
//   throughput — the default scheduler (2 connections) ≥ 0.65× the plain client of the same run
//                (its jobs/s ÷ the baseline's, the table's "× baseline"). It replaces an absolute
//                ≥ 2,000 jobs/s (issue 6): 2,000 ÷ the baseline's 3,037 jobs/s in the last full run
//                before the change (bench/REPORT.md of 2026-11-21), rounded down to 0.05. Absolute
//                jobs/s say more about the machine's load (and its disk) than about the scheduler.
//   timing     — p99 timing error ≤ 100 ms, for the scheduler and for pglater. It stays absolute: it
//                is the bound users are promised; the setTimeout floor is shown beside it.
// Medians and percentiles: bench/lib/stats.mjs. Prints a Markdown table (medians of the runs) and writes it to
// bench/results/scheduler.md.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { startServer } from './lib/pg-server.mjs';
import { fmt, mark, median, medianOf, percentile, ratioTarget, sleep } from './lib/stats.mjs';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const DIST = join(ROOT, 'dist');
if (!existsSync(join(DIST, 'src/scheduler/scheduler.js'))) {
  console.error('dist/ is missing: run `npm run build` first');
  process.exit(1);
}
const { createScheduler } = await import(join(DIST, 'src/scheduler/scheduler.js'));
const { createSchedulerMetrics } = await import(join(DIST, 'src/scheduler/metrics.js'));
const { migrate } = await import(join(DIST, 'src/sql/migrate.js'));
const { createBridge } = await import(join(DIST, 'src/bridge.js'));
const { parseConfig } = await import(join(DIST, 'src/config.js'));
const { sinkDefinitions } = await import(join(DIST, 'sinks/index.js'));
const { createLogger } = await import(join(DIST, 'src/logger.js'));

const args = Object.fromEntries(
  process.argv.slice(2).map((a) => {
    const [k, ...v] = a.replace(/^--/, '').split('=');
    return [k, v.length ? v.join('=') : true];
  }),
);
const quick = Boolean(args.quick);
const runs = Number(args.runs ?? (quick ? 1 : 3));
const seconds = Number(args.seconds ?? (quick ? 2 : 5));
const JOBS = Number(args.jobs ?? 1000);
const RATE = 100;
const DELAY_MS = 300;
/** The default scheduler's jobs/s ÷ the plain client's, at least (see the head of this file). */
const THROUGHPUT_TARGET = 0.65;
/** p99 timing error, ms, at most. */
const TIMING_TARGET_MS = 100;
const quiet = createLogger({ level: 'silent', destination: new Writable({ write: (_c, _e, cb) => cb() }) });

// ---- the database -------------------------------------------------------------------------------
const ownServer = typeof args.database === 'string' ? undefined : await startServer();
const BASE_URL = ownServer?.url ?? args.database;
process.on('SIGINT', () => {
  const stopped = ownServer ? ownServer.stop() : Promise.resolve();
  stopped.finally(() => process.exit(130));
});

async function freshDatabase(name) {
  const admin = new pg.Client({ connectionString: BASE_URL });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const u = new URL(BASE_URL);
  u.pathname = `/${name}`;
  const url = u.toString();
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  await migrate(c);
  await c.query('CREATE TABLE hits (n int, at timestamptz DEFAULT clock_timestamp())');
  await c.query('CREATE TABLE lag (due timestamptz, at timestamptz DEFAULT clock_timestamp())');
  return { url, c };
}

const schedulerConfig = (over = {}) => ({
  pollInterval: 1000,
  concurrency: Number(args.concurrency ?? 2),
  batchSize: Number(args.batch ?? 50),
  missedAfter: 60_000,
  history: { retention: 7 * 86_400_000 },
  ...over,
});
function startSchedulers(url, count, over) {
  const list = Array.from({ length: count }, () =>
    createScheduler({ connection: { connectionString: url }, config: schedulerConfig(over), logger: quiet, metrics: createSchedulerMetrics() }),
  );
  return Promise.all(list.map((s) => s.start())).then(async () => {
    const deadline = Date.now() + 10_000;
    while (!list.every((s) => s.ready) && Date.now() < deadline) await sleep(10);
    return list;
  });
}

// ---- throughput ---------------------------------------------------------------------------------
async function directBaseline(c) {
  await c.query('TRUNCATE hits');
  const t0 = performance.now();
  for (let i = 0; i < JOBS; i++) await c.query(`INSERT INTO hits (n) VALUES (${i})`);
  return JOBS / ((performance.now() - t0) / 1000);
}

async function schedulerThroughput(url, c, instances, over) {
  await c.query('TRUNCATE hits; TRUNCATE sidekick.schedule_runs');
  const schedulers = await startSchedulers(url, instances, over);
  try {
    await sleep(100);
    const { rows } = await c.query(`WITH ins AS (
        INSERT INTO sidekick.schedules (run_at, sql, origin)
        SELECT now(), format('INSERT INTO hits (n) VALUES (%s)', g), 'bench' FROM generate_series(1, ${JOBS}) g RETURNING 1)
      SELECT count(*) FROM ins`);
    if (Number(rows[0].count) !== JOBS) throw new Error('insert failed');
    const t0 = (await c.query('SELECT clock_timestamp() AS t')).rows[0].t;
    const deadline = Date.now() + 120_000;
    for (;;) {
      const n = Number((await c.query('SELECT count(*) AS n FROM hits')).rows[0].n);
      if (n >= JOBS) break;
      if (Date.now() > deadline) throw new Error(`only ${n} of ${JOBS} jobs ran in 120 s`);
      await sleep(5);
    }
    const last = (await c.query('SELECT max(at) AS t, count(DISTINCT n) AS d FROM hits')).rows[0];
    if (Number(last.d) !== JOBS) throw new Error(`a job ran twice or not at all (${last.d} distinct)`);
    return JOBS / ((last.t - t0) / 1000);
  } finally {
    await Promise.all(schedulers.map((s) => s.stop(5_000)));
  }
}

// ---- timing error -------------------------------------------------------------------------------
/** Timing errors in ms: n, p50, p99 (bench/lib/stats.mjs's percentile, as every benchmark) and max. */
async function lagStats(c) {
  const { rows } = await c.query('SELECT (extract(epoch FROM at - due) * 1000)::float8 AS ms FROM lag ORDER BY 1');
  const sorted = rows.map((r) => r.ms);
  return { n: sorted.length, p50: percentile(sorted, 0.5), p99: percentile(sorted, 0.99), max: sorted.at(-1) ?? Number.NaN };
}

/** Calls `produce(i)` at RATE per second for `seconds`, on schedule (no drift). */
async function atRate(produce) {
  const total = RATE * seconds;
  const start = performance.now();
  for (let i = 0; i < total; i++) {
    await sleep(start + (i * 1000) / RATE - performance.now());
    await produce(i);
  }
  return total;
}

async function waitForLag(c, total, extraMs) {
  const deadline = Date.now() + seconds * 1000 + extraMs + 30_000;
  for (;;) {
    const n = Number((await c.query('SELECT count(*) AS n FROM lag')).rows[0].n);
    if (n >= total) return;
    if (Date.now() > deadline) throw new Error(`only ${n} of ${total} timed jobs ran`);
    await sleep(50);
  }
}

async function timerBaseline(url, c) {
  await c.query('TRUNCATE lag');
  const runner = new pg.Client({ connectionString: url });
  await runner.connect();
  const pending = [];
  const total = await atRate(async () => {
    const due = new Date(Date.now() + DELAY_MS);
    pending.push(
      new Promise((resolve) =>
        setTimeout(() => {
          runner.query('INSERT INTO lag (due) VALUES ($1)', [due]).then(resolve, resolve);
        }, DELAY_MS),
      ),
    );
  });
  await Promise.all(pending);
  await waitForLag(c, total, DELAY_MS);
  await runner.end();
  return lagStats(c);
}

async function schedulerTiming(url, c) {
  await c.query('TRUNCATE lag');
  const [scheduler] = await startSchedulers(url, 1, {});
  const producer = new pg.Client({ connectionString: url });
  await producer.connect();
  try {
    const total = await atRate(() =>
      producer.query(
        `INSERT INTO sidekick.schedules (run_at, sql, origin)
       SELECT t, format('INSERT INTO lag (due) VALUES (%L)', t), 'bench' FROM (SELECT clock_timestamp() + make_interval(secs => $1) AS t) q`,
        [DELAY_MS / 1000],
      ),
    );
    await waitForLag(c, total, DELAY_MS);
    return lagStats(c);
  } finally {
    await producer.end();
    await scheduler.stop(5_000);
  }
}

async function pglaterTiming(url, c) {
  await c.query('TRUNCATE lag');
  const config = parseConfig({ database: url, scheduler: { pglater: true } }, { sinks: sinkDefinitions, file: 'bench' });
  const bridge = createBridge({ config, logger: quiet });
  await bridge.start();
  const deadline = Date.now() + 10_000;
  while (!bridge.readiness().ready && Date.now() < deadline) await sleep(10);
  const producer = new pg.Client({ connectionString: url });
  await producer.connect();
  try {
    // Due = when the notification was sent (database clock) + 1 s; the lag includes NOTIFY delivery.
    const total = await atRate(() =>
      producer.query(`SELECT pg_notify('pglater', format('1 INSERT INTO lag (due) VALUES (%L)', clock_timestamp() + interval '1 second'))`),
    );
    await waitForLag(c, total, 1000);
    return lagStats(c);
  } finally {
    await producer.end();
    await bridge.stop();
  }
}

// ---- run ----------------------------------------------------------------------------------------
try {
  const settings = await (async () => {
    const c = new pg.Client({ connectionString: BASE_URL });
    await c.connect();
    const { rows } = await c.query(
      `SELECT current_setting('server_version') AS v, current_setting('fsync') AS f, current_setting('synchronous_commit') AS s`,
    );
    await c.end();
    return rows[0];
  })();
  const results = { direct: [], c1: [], c2: [], two: [], timer: [], sched: [], pglater: [] };
  const loadBefore = loadavg()[0];
  for (let r = 0; r < runs; r++) {
    const { url, c } = await freshDatabase(`sk_bench_${process.pid}`);
    results.direct.push(await directBaseline(c));
    results.c1.push(await schedulerThroughput(url, c, 1, { concurrency: 1 }));
    results.c2.push(await schedulerThroughput(url, c, 1, {}));
    results.two.push(await schedulerThroughput(url, c, 2, {}));
    results.timer.push(await timerBaseline(url, c));
    results.sched.push(await schedulerTiming(url, c));
    results.pglater.push(await pglaterTiming(url, c));
    await c.end();
    process.stderr.write(`run ${r + 1}/${runs} done\n`);
  }

  const base = median(results.direct);
  const tput = (label, xs) => `| ${label} | ${fmt(median(xs))} | ${fmt(median(xs) / base, 2)}× |`;
  const lagRow = (label, xs) =>
    `| ${label} | ${RATE} | ${xs[0].n} | ${fmt(medianOf(xs, 'p50'), 1)} | ${fmt(medianOf(xs, 'p99'), 1)} | ${fmt(medianOf(xs, 'max'), 1)} |`;
  const defaultRatio = median(results.c2) / base;
  const timingOk = (xs) => mark(medianOf(xs, 'p99') <= TIMING_TARGET_MS);
  const startedHere = typeof args.database === 'string' ? '' : ', started by the benchmark';
  const serverNote = `PostgreSQL ${settings.v} (fsync=${settings.f}, synchronous_commit=${settings.s})${startedHere}`;
  const runNote = `${runs} run(s), medians; \`node bench/scheduler.mjs${quick ? ' --quick' : ''}\``;
  const loadNote = `load average ${loadBefore.toFixed(1)} before, ${loadavg()[0].toFixed(1)} after (other work on the machine shows here)`;
  const table = `## Scheduler

${serverNote}; ${runNote}; ${loadNote}.

**Throughput: ${fmt(JOBS)} trivial jobs (one-row INSERTs) due at once**, from the commit that made them due to the last one run.

| runner | jobs/s | × baseline |
|---|---:|---:|
${tput('baseline: the same statements sent one by one by a plain client', results.direct)}
${tput('scheduler, 1 connection (batches of 50)', results.c1)}
${tput('scheduler, default (2 connections)', results.c2)}
${tput('two schedulers (2 × 2 connections)', results.two)}

The baseline commits every statement on its own (one WAL flush each); the scheduler runs up to 50 jobs
per transaction, each under a savepoint with its history row and its row lock, and commits once per
batch, which is why it can beat the baseline. Every job ran exactly once (checked).

**Timing error at ${RATE} jobs/s for ${seconds} s**: start of the job's statement minus its due time, in ms.

| path | jobs/s | jobs | p50 ms | p99 ms | max ms |
|---|---:|---:|---:|---:|---:|
${lagRow(`baseline: in-process setTimeout at the due time, then the INSERT`, results.timer)}
${lagRow(`scheduler: rows inserted into sidekick.schedules, due ${DELAY_MS} ms later`, results.sched)}
${lagRow('pglater channel through the bridge: "1 <sql>" notifications (includes NOTIFY delivery)', results.pglater)}

Targets: the default scheduler's jobs/s ${ratioTarget(defaultRatio, THROUGHPUT_TARGET, 'the plain client of this run')} (it made \
${fmt(defaultRatio, 2)}×; a ratio, since other work on the machine slows both alike); p99 timing error ≤ ${TIMING_TARGET_MS} ms: \
scheduler ${timingOk(results.sched)}, pglater ${timingOk(results.pglater)}.
`;
  process.stdout.write(table);
  mkdirSync(join(ROOT, 'bench', 'results'), { recursive: true });
  writeFileSync(join(ROOT, 'bench', 'results', 'scheduler.md'), table);
} finally {
  await ownServer?.stop();
}
process.exit(0);
