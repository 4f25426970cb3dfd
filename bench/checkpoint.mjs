// What outbox.checkpointAfter costs and buys (issue 16, item 3).
//
// An outbox row stays until every sink routed to it has its event, so a crash makes the sinks that
// already had it receive it again. checkpointAfter bounds that: an event a sink still holds after
// that long is copied to the sink's own durable backlog (sidekick.deliveries) and the outbox row
// goes. The price is the copy: an insert and later a delete in sidekick.deliveries per event of a
// sink that is slower than checkpointAfter.
//
// Two sinks on one captured table: `fast` acknowledges at once, `slow` answers each batch after a
// fixed latency (it keeps up, it is just slow). One writer inserts single rows at a steady rate. We
// sample, every 100 ms, how many events wait in the outbox (sidekick.events): what a crash at that
// moment would send `fast` again. And we count what the drain wrote: rows inserted into
// sidekick.deliveries per event, and WAL bytes per event (the writer's own WAL included).
//
//   node bench/checkpoint.mjs [--runs 3] [--seconds 8] [--rate 400]
//
// On its own PostgreSQL server (fsync on). Prints one table: medians over the runs.
import pg from 'pg';
import { resolveCaptures } from '../dist/src/capture/catalog.js';
import { captureSpecsFromConfig } from '../dist/src/capture/spec.js';
import { captureStatements } from '../dist/src/capture/sql.js';
import { createBridge } from '../dist/src/bridge.js';
import { parseConfig } from '../dist/src/config.js';
import { createLogger } from '../dist/src/logger.js';
import { defineSink, OK } from '../dist/src/sink.js';
import { migrate } from '../dist/src/sql/migrate.js';
import { startServer } from './lib/pg-server.mjs';
import { median, percentile, sleep } from './lib/stats.mjs';

const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
};
const RUNS = arg('runs', 3);
const SECONDS = arg('seconds', 8);
const RATE = arg('rate', 400);

/** A sink that acknowledges every batch after `latency` ms (test-only type `lagging`). */
const lagging = defineSink({
  type: 'lagging',
  description: 'acknowledges after a fixed latency (benchmark)',
  options: {},
  create(_options, context) {
    const latency = context.name === 'slow' ? Number(process.env.BENCH_SLOW_MS) : 0;
    return {
      name: context.name,
      type: 'lagging',
      async start() {},
      async send(batch) {
        if (latency > 0) await sleep(latency);
        return batch.map(() => OK);
      },
      async stop() {},
    };
  },
});

async function one(server, { checkpointAfter, slowMs }, run) {
  const db = `b_${run}_${checkpointAfter}_${slowMs}`;
  const admin = new pg.Client({ connectionString: server.url });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${db}`);
  await admin.end();
  const url = server.url.replace(/\/postgres$/, `/${db}`);
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  await migrate(c);
  await c.query('CREATE TABLE t (id bigint PRIMARY KEY, v text)');
  const specs = captureSpecsFromConfig([{ table: 't', columns: '*', mode: 'statement' }]);
  await c.query(captureStatements(await resolveCaptures(c, specs)));
  process.env.BENCH_SLOW_MS = String(slowMs);
  const config = parseConfig(
    {
      database: url,
      outbox: { checkpointAfter },
      sinks: { fast: { type: 'lagging' }, slow: { type: 'lagging', concurrency: 32 } },
      routes: [{ from: 'public.t', to: ['fast', 'slow'] }],
    },
    { file: 'bench', env: {}, sinks: [lagging] },
  );
  const bridge = createBridge({ config, logger: createLogger({ level: 'silent' }) });
  await bridge.start();
  const before = (
    await c.query(
      `SELECT pg_current_wal_lsn() AS lsn, coalesce((SELECT n_tup_ins FROM pg_stat_user_tables WHERE relid = 'sidekick.deliveries'::regclass), 0) AS ins`,
    )
  ).rows[0];
  const writer = new pg.Client({ connectionString: url });
  await writer.connect();
  const samples = [];
  let written = 0;
  const started = Date.now();
  const sampler = (async () => {
    const s = new pg.Client({ connectionString: url });
    await s.connect();
    while (Date.now() - started < SECONDS * 1000) {
      await sleep(100);
      // Skip the first second: the steady state is what a crash meets.
      if (Date.now() - started > 1000) samples.push(Number((await s.query('SELECT count(*) AS n FROM sidekick.events')).rows[0].n));
    }
    await s.end();
  })();
  while (Date.now() - started < SECONDS * 1000) {
    const due = Math.floor(((Date.now() - started) / 1000) * RATE);
    while (written < due) await writer.query('INSERT INTO t VALUES ($1, $2)', [++written, 'x'.repeat(100)]);
    await sleep(5);
  }
  await sampler;
  // Let everything arrive, then count what the drain wrote for it.
  for (let i = 0; i < 200; i++) {
    const left = Number((await c.query('SELECT (SELECT count(*) FROM sidekick.events) + (SELECT count(*) FROM sidekick.deliveries) AS n')).rows[0].n);
    if (left === 0) break;
    await sleep(100);
  }
  await c.query('SELECT pg_stat_force_next_flush()');
  await sleep(50);
  const after = (
    await c.query(
      `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1) AS wal, coalesce((SELECT n_tup_ins FROM pg_stat_user_tables WHERE relid = ` +
        `'sidekick.deliveries'::regclass), 0) AS ins`,
      [before.lsn],
    )
  ).rows[0];
  await bridge.stop();
  await writer.end();
  await c.end();
  samples.sort((a, b) => a - b);
  return {
    exposure: median(samples),
    exposure95: percentile(samples, 0.95),
    copies: (Number(after.ins) - Number(before.ins)) / written,
    wal: Number(after.wal) / written,
  };
}

const server = await startServer({ fsync: 'on', synchronous_commit: 'on' });
try {
  const cases = [
    { checkpointAfter: 5000, slowMs: 200 },
    { checkpointAfter: 1000, slowMs: 200 },
    { checkpointAfter: 5000, slowMs: 2000 },
    { checkpointAfter: 1000, slowMs: 2000 },
  ];
  const results = cases.map(() => []);
  // Interleaved: run r of every case before run r+1 of any, so drift on a shared machine spreads evenly.
  for (let r = 0; r < RUNS; r++) {
    for (let i = 0; i < cases.length; i++) results[i].push(await one(server, cases[i], r));
  }
  console.log(`\ncheckpointAfter: events a crash would send the fast sink again, and what the copies cost`);
  console.log(
    `(one writer, ${RATE} single-row inserts/s for ${SECONDS} s; two sinks: fast, and slow with a fixed latency; medians of ${RUNS} runs)\n`,
  );
  console.log(
    '| slow sink latency | checkpointAfter | re-sent after a crash (median / p95 events) | as traffic | backlog copies per event | WAL bytes per event |',
  );
  console.log('|---:|---:|---:|---:|---:|---:|');
  cases.forEach((c, i) => {
    const m = (k) => median(results[i].map((x) => x[k]));
    console.log(
      `| ${c.slowMs} ms | ${c.checkpointAfter / 1000} s | ${Math.round(m('exposure'))} / ${Math.round(m('exposure95'))} | ` +
        `${(m('exposure') / RATE).toFixed(2)} s | ${m('copies').toFixed(2)} | ${Math.round(m('wal'))} |`,
    );
  });
} finally {
  await server.stop();
}
