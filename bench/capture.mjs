#!/usr/bin/env node
// bench/capture.mjs — what durable row-change capture costs the writers, and how fast the drain is.
//
//   node bench/capture.mjs            # full: 5 runs of each measurement, 8 s each
//   node bench/capture.mjs --quick    # smoke: 3 short runs
//   options: --runs N  --seconds S  --only trigger|drain  --fsync off (own server without fsync; numbers not to be quoted)
//            --drain-fsync on (the drain part with fsync too; this disk cannot take 10 000 fsynced tx/s)
//
// It starts a PostgreSQL 15 server of its own (fsync=on, synchronous_commit=on, nothing else running
// on it) and measures, with pgbench, interleaving the variants run by run, medians reported:
//  1. trigger cost: rows/s of plain INSERTs vs the same INSERTs on a table with pg-sidekick's capture
//     triggers (statement-level, the default, and row-level), for 1-row transactions at 2 and 8
//     clients and 100-row statements. No drain runs here: this is the writers' own cost.
//  2. drain: the bridge (from dist/, in this process) drains to a no-op sink while pgbench writes
//     1-row transactions at 10 000/s: events/s, backlog when the writers stop, p50/p99 from the
//     writer's transaction start (the envelope's `at`) to the sink; then the drain rate from a
//     backlog of 200 000 events. For this part the server runs with fsync=off (still
//     synchronous_commit=on): the disk of the development machine cannot take 10 000 fsynced
//     transactions a second, and what is measured here is the drain, not the disk. The backlog's
//     baseline, run by run beside it: a bare node-postgres client that reads the same backlog from
//     sidekick.events and deletes it (bench/lib/bare-clients.mjs, bareDrain), the floor of any drain.
//
// Targets (pass/fail), relative to what the same run measured, never absolute events/s:
//  - trigger cost: the statement trigger's rows/s ÷ plain INSERT's, the median of each run's ratio to
//    the plain run beside it: ≥ 0.90× at 2 clients, ≥ 0.75× at 8, ≥ 0.60× for 100-row statements.
//  - drain under writers: the backlog when the writers stop ≤ 50 ms of the writers' own rate in that
//    run (0.05 × their tx/s; "near zero"), and p99 ≤ 100 ms. The latency bound stays absolute: it is
//    what users are promised, and no bare client spans transaction start → sink.
//  - drain from a backlog: informational, no pass/fail. It is printed as a ratio to the bare
//    read-and-delete client (the median of each run's ratio); the absolute ≥ 40,000/s it had is gone,
//    and a ratio target needs a full run on a quiet machine to give it a value.
// Medians and percentiles: bench/lib/stats.mjs; pgbench: bench/lib/pgbench.mjs.
// Needs `npm run build` first. Prints Markdown and writes bench/results/capture.md.
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { resolveCaptures } from '../dist/src/capture/catalog.js';
import { captureSpecsFromConfig } from '../dist/src/capture/spec.js';
import { captureStatements } from '../dist/src/capture/sql.js';
import { createBridge } from '../dist/src/bridge.js';
import { parseConfig } from '../dist/src/config.js';
import { createLogger } from '../dist/src/logger.js';
import { migrate } from '../dist/src/sql/migrate.js';
import { sinkDefinitions } from '../dist/sinks/index.js';
import { bareDrain } from './lib/bare-clients.mjs';
import { startServer } from './lib/pg-server.mjs';
import { pgbench } from './lib/pgbench.mjs';
import { fmt, mark, median, percentile, ratioTarget, sleep } from './lib/stats.mjs';

/** Why the drain part runs with fsync off. */
const FSYNC_OFF_NOTE = ' (this disk cannot take 10 000 fsynced transactions a second; the drain is what is measured)';
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : fallback;
};
const quick = args.includes('--quick');
const runs = Number(option('--runs', quick ? 3 : 5));
const seconds = Number(option('--seconds', quick ? 2 : 8));
const fsync = option('--fsync', 'on');
const drainFsync = option('--drain-fsync', 'off');
const only = option('--only', 'all'); // trigger | drain | all
const backlogSize = quick ? 20_000 : 200_000;
const WRITER_RATE = 10_000;

const say = (line) => process.stderr.write(`${line}\n`);
async function main() {
  say(`capture bench: starting a PostgreSQL server of its own (fsync=${fsync}) …`);
  const server = await startServer({ fsync, synchronous_commit: 'on', max_wal_size: '8GB', checkpoint_timeout: '30min' });
  const database = 'bench';
  const admin = new pg.Client({ connectionString: server.url });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${database}`);
  await admin.end();
  const url = server.url.replace(/\/postgres$/, `/${database}`);
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const lines = [];
  try {
    await migrate(client);
    const tables = { plain: 'plain INSERT', cap_stmt: 'capture, statement trigger (default)', cap_row: 'capture, row trigger' };
    for (const t of Object.keys(tables)) {
      await client.query(`CREATE TABLE ${t} (id bigserial PRIMARY KEY, name text NOT NULL, qty int NOT NULL, at timestamptz NOT NULL DEFAULT now())`);
    }
    const specs = captureSpecsFromConfig(
      [
        { table: 'public.cap_stmt', columns: '*', mode: 'statement' },
        { table: 'public.cap_row', columns: '*', mode: 'row' },
      ],
      'bench',
    );
    await client.query(captureStatements(await resolveCaptures(client, specs)));
    const dir = mkdtempSync(join(tmpdir(), 'sk-bench-'));
    const script = (name, sql) => {
      const f = join(dir, `${name}.sql`);
      writeFileSync(f, `${sql}\n`);
      return f;
    };
    const reset = async () => {
      await client.query('TRUNCATE plain, cap_stmt, cap_row, sidekick.outbox, sidekick.row_changes');
      await client.query('CHECKPOINT');
    };

    if (only !== 'drain') {
      // ---- 1. trigger cost ------------------------------------------------------------------------
      const workloads = [
        { name: '1-row transactions, 2 clients', clients: 2, rows: 1, sql: (t) => `INSERT INTO ${t} (name, qty) VALUES ('abc', 1);`, target: 0.9 },
        { name: '1-row transactions, 8 clients', clients: 8, rows: 1, sql: (t) => `INSERT INTO ${t} (name, qty) VALUES ('abc', 1);`, target: 0.75 },
        {
          name: '100-row statements, 2 clients',
          clients: 2,
          rows: 100,
          sql: (t) => `INSERT INTO ${t} (name, qty) SELECT 'abc', g FROM generate_series(1, 100) g;`,
          target: 0.6,
        },
      ];
      const results = new Map();
      const ratios = new Map();
      const names = Object.keys(tables);
      for (const w of workloads) {
        for (let r = 0; r < runs; r++) {
          // Interleaved (and in a rotating order), so a slow moment of the machine hurts every variant
          // alike; each run's ratio is taken against the plain run next to it.
          const run = {};
          for (const t of names.slice(r % names.length).concat(names.slice(0, r % names.length))) {
            await reset();
            const { tps } = await pgbench(server, database, script(`${t}-${w.rows}`, w.sql(t)), { clients: w.clients, seconds });
            run[t] = tps * w.rows;
            const key = `${w.name}|${t}`;
            results.set(key, [...(results.get(key) ?? []), tps * w.rows]);
            say(`  ${w.name}, ${tables[t]}: ${fmt(tps * w.rows)} rows/s (run ${r + 1}/${runs})`);
          }
          for (const t of names) ratios.set(`${w.name}|${t}`, [...(ratios.get(`${w.name}|${t}`) ?? []), run[t] / run.plain]);
        }
      }
      const where = `PostgreSQL 15, a server of the benchmark's own, fsync=${fsync}, synchronous_commit=on${fsync === 'on' ? '' : ' — NOT for quoting'}`;
      lines.push(
        `## Capture: what the trigger costs the writers${quick ? ' (--quick)' : ''}`,
        '',
        `${where}; pgbench, median of ${runs} interleaved runs × ${seconds} s (× plain: the median of each run's ratio to the plain run beside it); ` +
          `no drain running (the writers' own cost).`,
        '',
        '| workload | variant | rows/s | × plain | target |',
        '|---|---|---:|---:|---:|',
      );
      for (const w of workloads) {
        for (const t of Object.keys(tables)) {
          const value = median(results.get(`${w.name}|${t}`));
          const ratio = median(ratios.get(`${w.name}|${t}`));
          const target = t === 'cap_stmt' ? ratioTarget(ratio, w.target, 'plain') : '';
          lines.push(`| ${w.name} | ${tables[t]} | ${fmt(value)} | ${ratio.toFixed(2)}× | ${target} |`);
        }
      }
      lines.push('');
    }

    if (only !== 'trigger') {
      // ---- 2. drain --------------------------------------------------------------------------------
      if (drainFsync !== fsync) {
        await client.query(`ALTER SYSTEM SET fsync = ${drainFsync === 'on' ? 'on' : 'off'}`);
        await client.query('SELECT pg_reload_conf()');
        await sleep(500);
      }
      let latencies = [];
      let delivered = 0;
      const noop = {
        type: 'noop',
        description: 'acknowledges everything at once (benchmark)',
        options: {},
        defaults: { concurrency: 4, batchSize: 1000 },
        create(_options, context) {
          return {
            name: context.name,
            type: 'noop',
            async start() {},
            async send(batch) {
              const now = Date.now();
              for (const e of batch) latencies.push(now - Date.parse(e.at));
              delivered += batch.length;
              return batch.map(() => ({ ok: true }));
            },
            async stop() {},
          };
        },
      };
      const config = parseConfig(
        {
          database: url,
          capture: [{ table: 'public.cap_stmt' }],
          sinks: { sink: { type: 'noop' } },
          routes: [{ from: '*', to: 'sink' }],
        },
        { file: 'bench', env: {}, sinks: [...sinkDefinitions, noop] },
      );
      const logger = createLogger({ level: process.env.LOG_LEVEL ?? 'warn' });
      const pending = async () => Number((await client.query('SELECT count(*) AS n FROM sidekick.events')).rows[0].n);

      const steady = { rate: [], backlog: [], p50: [], p99: [], writers: [] };
      const one = script('drain-1', `INSERT INTO cap_stmt (name, qty) VALUES ('abc', 1);`);
      for (let r = 0; r < runs; r++) {
        await reset();
        const bridge = createBridge({ config, logger });
        await bridge.start();
        await sleep(300);
        latencies = [];
        delivered = 0;
        const started = Date.now();
        const { transactions, tps } = await pgbench(server, database, one, { clients: 32, seconds, rate: WRITER_RATE });
        const elapsed = (Date.now() - started) / 1000;
        const backlog = await pending();
        const deliveredDuring = delivered;
        const deadline = Date.now() + 60_000;
        while (delivered < transactions && Date.now() < deadline) await sleep(20);
        await bridge.stop();
        const sorted = latencies.slice().sort((a, b) => a - b);
        steady.rate.push(deliveredDuring / elapsed);
        steady.backlog.push(backlog);
        steady.p50.push(percentile(sorted, 0.5));
        steady.p99.push(percentile(sorted, 0.99));
        steady.writers.push(tps);
        say(
          `  drain under ${fmt(tps)} tx/s of writers: ${fmt(deliveredDuring / elapsed)} events/s, backlog ${backlog}, p50 ${percentile(sorted, 0.5)} ` +
            `ms, p99 ${percentile(sorted, 0.99)} ms (run ${r + 1}/${runs})`,
        );
      }
      /** A backlog of one statement's rows (its first two rows alone, the rest in chunks of 1000). */
      const writeBacklog = async () => {
        await reset();
        await client.query(`INSERT INTO cap_stmt (name, qty) SELECT 'abc', g FROM generate_series(1, ${backlogSize}) g`);
      };
      /** The bridge drains the backlog to the no-op sink: events/s, NaN if anything was left. */
      const drainRun = async () => {
        await writeBacklog();
        latencies = [];
        delivered = 0;
        const bridge = createBridge({ config, logger });
        const started = Date.now();
        await bridge.start();
        const deadline = Date.now() + 300_000;
        while (delivered < backlogSize && Date.now() < deadline) await sleep(5);
        const elapsed = (Date.now() - started) / 1000;
        await bridge.stop();
        const left = await pending();
        say(`  drain from a backlog of ${fmt(backlogSize)}: ${fmt(backlogSize / elapsed)} events/s, ${left} left in the outbox`);
        return delivered >= backlogSize && left === 0 ? backlogSize / elapsed : Number.NaN;
      };
      /** The baseline: node-postgres alone reads the same backlog and deletes it. */
      const bareRun = async () => {
        await writeBacklog();
        const started = Date.now();
        const read = await bareDrain(url);
        const elapsed = (Date.now() - started) / 1000;
        const left = await pending();
        say(`  bare read + delete of the backlog: ${fmt(read / elapsed)} events/s, ${left} left in the outbox`);
        return read >= backlogSize && left === 0 ? backlogSize / elapsed : Number.NaN;
      };
      const fromBacklog = [];
      const bareBacklog = [];
      const backlogRatios = [];
      for (let r = 0; r < runs; r++) {
        // Alternate who goes first, so neither always meets the server in the same state.
        const run = {};
        for (const who of r % 2 === 0 ? ['drain', 'bare'] : ['bare', 'drain']) run[who] = who === 'drain' ? await drainRun() : await bareRun();
        fromBacklog.push(run.drain);
        bareBacklog.push(run.bare);
        backlogRatios.push(run.drain / run.bare);
        say(`  backlog run ${r + 1}/${runs}: drain ${fmt(run.drain / run.bare, 2)}× bare read + delete`);
      }
      const rate = median(fromBacklog);
      const bareRate = median(bareBacklog);
      const backlogRatio = median(backlogRatios);
      const p99 = median(steady.p99);
      const backlog = median(steady.backlog);
      const writers = median(steady.writers);
      lines.push(
        `## Capture: the drain (outbox → no-op sink)${quick ? ' (--quick)' : ''}`,
        '',
        `Same server, now with ` +
          `fsync=${drainFsync}${drainFsync === 'off' ? FSYNC_OFF_NOTE : ''}, writers with synchronous_commit=on. The bridge runs in the benchmark's ` +
          `process; its bookkeeping commits use synchronous_commit=off. Writers: pgbench, 32 clients, 1-row INSERT transactions on a captured ` +
          `table (statement trigger), rate-limited to ${fmt(WRITER_RATE)}/s for ${seconds} s; latency from the writer's transaction start to the ` +
          `sink. Median of ${runs} runs.`,
        '',
        '| scenario | writers tx/s | events/s | p50 ms | p99 ms | backlog when writers stop | target |',
        '|---|---:|---:|---:|---:|---:|---|',
        `| writers at ${fmt(WRITER_RATE)} tx/s → drain → no-op sink | ${fmt(writers)} | ${fmt(median(steady.rate))} | ` +
          `${fmt(median(steady.p50), 1)} | ${fmt(p99, 1)} | ${fmt(backlog)} | p99 ≤ 100 ms ${mark(p99 <= 100)}, backlog ≤ 0.05 s of the writers ` +
          `${mark(backlog <= 0.05 * writers)} |`,
        `| backlog of ${fmt(backlogSize)} → drain → no-op sink | – | ${fmt(rate)} | | | | ` +
          `none (informational): ${fmt(backlogRatio, 2)}× bare read + delete |`,
        `| backlog of ${fmt(backlogSize)} → bare read + delete (node-postgres alone, no sink; the baseline) | – | ${fmt(bareRate)} | | | | |`,
        '',
        "Targets: the backlog when the writers stop is measured against the writers' own rate in the same run (at most 50 ms of their " +
          'writes); the p99 bound is absolute (the latency users are promised; nothing bare spans transaction start → sink). The drain from a ' +
          'backlog has no pass/fail target: it is shown against a bare node-postgres client that reads the same backlog from sidekick.events ' +
          "and deletes it, one transaction per 1000 events (× bare: the median of each run's ratio).",
        '',
        `Machine: ${cpus()[0]?.model?.trim()}, ${cpus().length} cores; load average at the end ${loadavg()
          .map((l) => l.toFixed(1))
          .join(' ')} (other work on the machine shows up as noise).`,
        '',
      );
    }
  } finally {
    await client.end().catch(() => {});
    await server.stop();
  }
  const text = lines.join('\n');
  process.stdout.write(`${text}\n`);
  mkdirSync(join(ROOT, 'bench', 'results'), { recursive: true });
  writeFileSync(join(ROOT, 'bench', 'results', 'capture.md'), `${text}\n`);
}

main().catch((error) => {
  process.stderr.write(`capture bench failed: ${error.stack ?? error}\n`);
  process.exit(1);
});
