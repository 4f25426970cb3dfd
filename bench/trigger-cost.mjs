#!/usr/bin/env node
// bench/trigger-cost.mjs — where a capture trigger's cost goes: the server's CPU time per one-row
// INSERT transaction, with pg-sidekick's generated triggers and with diagnostic variants that each
// leave one part out.
//
//   npm run build && node bench/trigger-cost.mjs [--quick] [--runs N] [--transactions N]
//   npm run build && node bench/trigger-cost.mjs --instructions    # needs valgrind
//
// bench/capture.mjs measures what writers see (pgbench, fsync on), but at 8 clients on 2 cores its
// runs swing too much to rank variants a few microseconds apart. This one takes the client, the
// network and the disk out: one session runs a DO block of N `INSERT …; COMMIT;` (a procedure-style
// loop, so every row is its own transaction), on a server of its own with fsync=off and
// synchronous_commit=off, nothing else on it. What is left is the backend's CPU per transaction.
// Variants are interleaved run by run; the table gives the minimum and the median over runs, and
// each variant's cost over the plain INSERT. On a shared machine other work only ever adds time, so
// the minimum is the closest to a variant's own cost (quiet runs agree to a few tenths of a µs).
//
// Variants marked "diagnostic" are not something pg-sidekick could ship: they only show what one
// part costs (for instance, the capture functions must pin search_path: they are SECURITY DEFINER).
// No pass/fail target: every figure is informational, as a difference to the plain INSERT measured
// in the same run (the baseline). bench/capture.mjs holds the trigger's targets (ratios to plain).
// Medians and number format: bench/lib/stats.mjs.
// Prints Markdown and writes bench/results/trigger-cost.md.
//
// --instructions counts instead of timing: the same variants, each a single-user backend
// (postgres --single: no client, no network, no other process) under valgrind, which counts the
// instructions it executes. Run with 200 and with 1,200 one-row INSERT transactions, the difference
// ÷ 1,000 is the instructions of one transaction, start-up and shutdown left out. The count is
// repeatable to about a hundred instructions, however busy the machine: it ranks variants that
// timing cannot tell apart. It is not time (cache misses are not in it). Writes
// bench/results/trigger-instructions.md.
import { mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { captureStatements } from '../dist/src/capture/sql.js';
import { migrate } from '../dist/src/sql/migrate.js';
import { PG_BIN, startServer } from './lib/pg-server.mjs';
import { fmt, median } from './lib/stats.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] !== undefined ? Number(args[i + 1]) : fallback;
};
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--quick' || args[i] === '--instructions') continue;
  if ((args[i] === '--runs' || args[i] === '--transactions') && args[i + 1] !== undefined) {
    i++;
    continue;
  }
  throw new Error(`unknown argument ${args[i]} (use --quick, --runs N, --transactions N, --instructions)`);
}
const quick = args.includes('--quick');
const instructions = args.includes('--instructions');
const runs = option('--runs', quick ? 3 : 7);
const transactions = option('--transactions', quick ? 5_000 : 20_000);
const say = (line) => process.stderr.write(`${line}\n`);

const TABLE = '%T%';
const generated = (mode) =>
  captureStatements([{ schema: 'public', table: TABLE, key: ['id'], keySource: 'primary key', origin: 'bench', mode, operations: { insert: '*' } }]);
const statement = generated('statement');
const PIN = ' SET search_path = pg_catalog, pg_temp';
/** A variant's SQL with `from` removed; fails loudly if the generated SQL no longer contains it. */
const without = (sql, from) => {
  if (!sql.includes(from)) throw new Error(`the generated trigger no longer contains ${JSON.stringify(from)}: update bench/trigger-cost.mjs`);
  return sql.replaceAll(from, '');
};
/** The statement trigger with its one-row insert into sidekick.outbox, every column named (as before sql/005). */
const wide = (sql) => {
  const from = `INSERT INTO sidekick.row_changes (id, xid, at, capture, new, old, keys)
  SELECT nextval('sidekick.outbox_id_seq'), pg_current_xact_id(), now(), '{"INSERT","public","${TABLE}","id"}'::text[], t.x, NULL::json, NULL::json`;
  const to = `INSERT INTO sidekick.outbox (id, xid, at, source, channel, op, schema_name, table_name, key_columns, event_ids,
    new, old, keys, key, payload, origin_id, target) OVERRIDING SYSTEM VALUE
  SELECT nextval('sidekick.outbox_id_seq'), pg_current_xact_id(), now(), 'table'::text, NULL::text, 'INSERT'::text,
    TG_TABLE_SCHEMA::text, TG_TABLE_NAME::text,
    '{"id"}'::text[], NULL::bigint[], t.x, NULL::json, NULL::json, NULL::text, NULL::jsonb, NULL::bigint, NULL::text`;
  if (!sql.includes(from)) throw new Error('the generated trigger no longer contains its one-row insert as expected: update bench/trigger-cost.mjs');
  return sql.replace(from, to);
};
const empty = (
  pinned,
) => `CREATE FUNCTION public."f_${TABLE}"() RETURNS trigger LANGUAGE plpgsql${pinned ? ` SECURITY DEFINER${PIN}` : ''} AS $$ BEGIN RETURN NULL; END $$;
CREATE TRIGGER t AFTER INSERT ON public."${TABLE}" REFERENCING NEW TABLE AS n FOR EACH STATEMENT EXECUTE FUNCTION public."f_${TABLE}"();`;

const VARIANTS = [
  { name: 'plain', label: 'plain INSERT (no trigger)', sql: '' },
  { name: 'statement', label: 'capture, statement trigger (default)', sql: statement },
  { name: 'row', label: 'capture, row trigger (`mode: row`)', sql: generated('row') },
  {
    name: 'wide',
    label: 'diagnostic: statement trigger, its one-row insert into the 17-column `sidekick.outbox` (as before migration 005)',
    sql: wide(statement),
  },
  { name: 'no_pin', label: 'diagnostic: statement trigger without `SET search_path`', sql: without(statement, PIN) },
  { name: 'empty_pinned', label: 'diagnostic: empty statement trigger (transition table), SECURITY DEFINER + `SET search_path`', sql: empty(true) },
  { name: 'empty', label: 'diagnostic: empty statement trigger (transition table), plain plpgsql', sql: empty(false) },
];

say(`trigger-cost: starting a PostgreSQL server of its own (fsync=off, synchronous_commit=off) …`);
const server = await startServer({ fsync: 'off', synchronous_commit: 'off', full_page_writes: 'off' });
const client = new pg.Client({ connectionString: server.url });
const load = loadavg();
try {
  await client.connect();
  await migrate(client);
  const version = (await client.query('SHOW server_version')).rows[0].server_version;
  for (const v of VARIANTS) {
    const table = `t_${v.name}`;
    await client.query(
      `CREATE TABLE public.${table} (id bigserial PRIMARY KEY, name text NOT NULL, qty int NOT NULL, at timestamptz NOT NULL DEFAULT now())`,
    );
    if (v.sql) await client.query(v.sql.replaceAll(TABLE, table));
  }
  await (instructions ? countInstructions(version) : timeVariants(version));
} finally {
  await client.end().catch(() => {});
  await server.stop();
}

/** The timed runs (the default). */
async function timeVariants(version) {
  const times = new Map(VARIANTS.map((v) => [v.name, []]));
  for (let r = 0; r < runs; r++) {
    // Rotate the order run by run, so no variant always runs first or last.
    for (const v of [...VARIANTS.slice(r % VARIANTS.length), ...VARIANTS.slice(0, r % VARIANTS.length)]) {
      await client.query(`TRUNCATE public.t_${v.name}, sidekick.outbox, sidekick.row_changes`);
      const t0 = performance.now();
      await client.query(
        `DO $$ BEGIN FOR i IN 1..${transactions} LOOP INSERT INTO public.t_${v.name} (name, qty) VALUES ('abc', 1); COMMIT; END LOOP; END $$`,
      );
      const us = ((performance.now() - t0) * 1000) / transactions;
      times.get(v.name).push(us);
      say(`  ${v.label}: ${fmt(us, 2)} µs per transaction (run ${r + 1}/${runs})`);
    }
  }
  const plainMedian = median(times.get('plain'));
  const plainMin = Math.min(...times.get('plain'));
  const lines = [
    "## Capture trigger: the server's CPU per one-row INSERT transaction",
    '',
    `PostgreSQL ${version}, a server of the benchmark's own (fsync=off, synchronous_commit=off: CPU, not the disk); one session, a DO loop of ` +
      `${fmt(transactions)} \`INSERT …; COMMIT;\` per run, ${runs} interleaved runs. "+ µs" is over the plain INSERT. Other work on a shared ` +
      `machine only adds time: the minimum is the closer figure.`,
    '',
    '| variant | µs per transaction (minimum) | + µs | µs (median) | + µs |',
    '|---|---:|---:|---:|---:|',
  ];
  for (const v of VARIANTS) {
    const m = median(times.get(v.name));
    const min = Math.min(...times.get(v.name));
    const over = (x, base) => (v.name === 'plain' ? '' : `${x - base >= 0 ? '+' : ''}${fmt(x - base, 1)}`);
    lines.push(`| ${v.label} | ${fmt(min, 2)} | ${over(min, plainMin)} | ${fmt(m, 2)} | ${over(m, plainMedian)} |`);
  }
  lines.push(
    '',
    'Diagnostic variants leave one part out to show what it costs; they are not options. The capture functions are SECURITY DEFINER, so they must pin ' +
      '`search_path`; a one-row statement writes its event directly (the row count of its LIMIT 2 insert tells it from a statement of several ' +
      'rows, which goes on to the chunked insert).',
    `Load average (1, 5, 15 min) at the start: ${load.map((x) => x.toFixed(2)).join(' ')}.`,
  );
  const out = lines.join('\n');
  process.stdout.write(`${out}\n`);
  mkdirSync(join(here, 'results'), { recursive: true });
  writeFileSync(join(here, 'results', 'trigger-cost.md'), `${out}\n`);
}

/** --instructions: each variant under valgrind in a single-user backend (see the head of this file). */
async function countInstructions(version) {
  const probe = await server.shell('command -v valgrind').catch(() => undefined);
  if (!probe?.stdout.trim()) throw new Error('--instructions needs valgrind (apt-get install valgrind)');
  await client.end();
  await server.halt();
  const dir = dirname(server.data);
  const count = async (v, n) => {
    const file = join(dir, `in-${v.name}-${n}.sql`);
    writeFileSync(file, `INSERT INTO public.t_${v.name} (name, qty) VALUES ('abc', 1);\n`.repeat(n));
    const { stderr } = await server.shell(
      `valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null ${PG_BIN}/postgres --single -D '${server.data}' -c fsync=off ` +
        `postgres < '${file}' > /dev/null`,
    );
    const m = /I\s+refs:\s+([\d,]+)/.exec(stderr);
    if (!m) throw new Error(`valgrind gave no instruction count for ${v.name}:\n${stderr.slice(-2000)}`);
    return Number(m[1].replaceAll(',', ''));
  };
  const per = new Map();
  for (const v of VARIANTS) {
    const [a, b] = [await count(v, 200), await count(v, 1200)];
    per.set(v.name, (b - a) / 1000);
    say(`  ${v.label}: ${fmt(per.get(v.name) / 1000, 1)}k instructions per transaction`);
  }
  const plain = per.get('plain');
  const lines = [
    '## Capture trigger: instructions per one-row INSERT transaction',
    '',
    `PostgreSQL ${version} (\`${PG_BIN}\`), a single-user backend under valgrind: no client, no network, no other process; (instructions with 1,200 ` +
      `one-row INSERT transactions − with 200) ÷ 1,000. Repeatable to about ±0.1k, whatever else runs on the machine; not time (cache misses are ` +
      `not counted).`,
    '',
    '| variant | instructions per transaction | over the plain INSERT |',
    '|---|---:|---:|',
  ];
  for (const v of VARIANTS) {
    const x = per.get(v.name);
    lines.push(`| ${v.label} | ${fmt(x / 1000, 1)}k | ${v.name === 'plain' ? '' : `+${fmt((x - plain) / 1000, 1)}k`} |`);
  }
  const out = lines.join('\n');
  process.stdout.write(`${out}\n`);
  mkdirSync(join(here, 'results'), { recursive: true });
  writeFileSync(join(here, 'results', 'trigger-instructions.md'), `${out}\n`);
}
