#!/usr/bin/env node
// bench/capture-filter.mjs — what a capture filter (`where`) saves the writers.
//
//   node bench/capture-filter.mjs            # 5 runs of 8 s per variant
//   node bench/capture-filter.mjs --quick    # 3 runs of 3 s
//   options: --runs N  --seconds S  --clients C (default 8)  --mode statement|row (default statement)
//
// A PostgreSQL 15 server of its own (fsync=on, synchronous_commit=on, nothing else on it); pgbench
// writers, 1-row INSERT transactions whose qty is random, into three tables, interleaved run by run:
//  - plain: no trigger;
//  - capture: the capture triggers, every row written to the outbox;
//  - capture, where: the same triggers with `where: "qty % 2 = 0"`: half the rows are filtered out
//    in the trigger and never written.
// Prints TPS (medians) and × plain (the median of each run's ratio to the plain run beside it).
// No drain runs: this is the writers' own cost. Needs `npm run build` first.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { resolveCaptures } from '../dist/src/capture/catalog.js';
import { captureSpecsFromConfig } from '../dist/src/capture/spec.js';
import { captureStatements } from '../dist/src/capture/sql.js';
import { migrate } from '../dist/src/sql/migrate.js';
import { startServer } from './lib/pg-server.mjs';
import { pgbench } from './lib/pgbench.mjs';
import { fmt, median } from './lib/stats.mjs';

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : fallback;
};
const quick = args.includes('--quick');
const runs = Number(option('--runs', quick ? 3 : 5));
const seconds = Number(option('--seconds', quick ? 3 : 8));
const clients = Number(option('--clients', 8));
const mode = option('--mode', 'statement');
const say = (line) => process.stderr.write(`${line}\n`);

const VARIANTS = {
  plain: 'plain INSERT (no trigger)',
  cap_all: 'capture, no filter',
  cap_half: 'capture, where: half the rows filtered out',
};

async function main() {
  say(`capture-filter bench: starting a PostgreSQL server of its own (fsync=on) …`);
  const server = await startServer({ fsync: 'on', synchronous_commit: 'on', max_wal_size: '8GB', checkpoint_timeout: '30min' });
  const database = 'bench';
  const admin = new pg.Client({ connectionString: server.url });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${database}`);
  await admin.end();
  const client = new pg.Client({ connectionString: server.url.replace(/\/postgres$/, `/${database}`) });
  await client.connect();
  try {
    await migrate(client);
    for (const t of Object.keys(VARIANTS)) {
      await client.query(`CREATE TABLE ${t} (id bigserial PRIMARY KEY, name text NOT NULL, qty int NOT NULL, at timestamptz NOT NULL DEFAULT now())`);
    }
    const specs = captureSpecsFromConfig(
      [
        { table: 'public.cap_all', columns: '*', mode },
        { table: 'public.cap_half', columns: '*', mode, where: 'qty % 2 = 0' },
      ],
      'bench',
    );
    await client.query(captureStatements(await resolveCaptures(client, specs)));
    const dir = mkdtempSync(join(tmpdir(), 'sk-bench-filter-'));
    const scripts = {};
    for (const t of Object.keys(VARIANTS)) {
      scripts[t] = join(dir, `${t}.sql`);
      writeFileSync(scripts[t], `\\set q random(1, 1000000)\nINSERT INTO ${t} (name, qty) VALUES ('abc', :q);\n`);
    }
    const tps = Object.fromEntries(Object.keys(VARIANTS).map((t) => [t, []]));
    const ratios = Object.fromEntries(Object.keys(VARIANTS).map((t) => [t, []]));
    const written = { cap_all: [], cap_half: [] };
    for (let r = 0; r < runs; r++) {
      const run = {};
      // Interleaved, in a rotating order, so drift of the machine spreads over every variant.
      const order = Object.keys(VARIANTS);
      for (let k = 0; k < r % order.length; k++) order.push(order.shift());
      for (const t of order) {
        await client.query('TRUNCATE plain, cap_all, cap_half, sidekick.outbox, sidekick.row_changes');
        await client.query('CHECKPOINT');
        const result = await pgbench(server, database, scripts[t], { clients, seconds });
        run[t] = result.tps;
        tps[t].push(result.tps);
        if (t !== 'plain') {
          const { rows } = await client.query(
            `SELECT (SELECT count(*) FROM sidekick.events)::float / greatest((SELECT count(*) FROM ${t}), 1) AS share`,
          );
          written[t].push(rows[0].share);
        }
        say(`  run ${r + 1}/${runs}, ${VARIANTS[t]}: ${fmt(result.tps)} tx/s`);
      }
      for (const t of Object.keys(VARIANTS)) ratios[t].push(run[t] / run.plain);
    }
    const lines = [
      `capture filter: ${clients} clients, 1-row INSERT transactions, ${mode}-level triggers, fsync=on, medians of ${runs} runs of ${seconds} s`,
      '',
      '| variant | tx/s | × plain | rows written to the outbox |',
      '|---|---:|---:|---:|',
      ...Object.entries(VARIANTS).map(
        ([t, name]) =>
          `| ${name} | ${fmt(median(tps[t]))} | ${median(ratios[t]).toFixed(2)}× | ${t === 'plain' ? '' : `${(median(written[t]) * 100).toFixed(0)} %`} |`,
      ),
      '',
      `× plain per run: capture ${ratios.cap_all.map((x) => x.toFixed(2)).join(', ')}; where ${ratios.cap_half.map((x) => x.toFixed(2)).join(', ')}`,
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  } finally {
    await client.end().catch(() => {});
    await server.stop();
  }
}

main().catch((error) => {
  process.stderr.write(`${error.stack ?? error}\n`);
  process.exitCode = 1;
});
