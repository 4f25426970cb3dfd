#!/usr/bin/env node
// bench/shaping.mjs — what route filters (CEL) and transforms (JSONata, a module) cost (issue 18 item 7).
//
//   npm run build && node bench/shaping.mjs [--quick] [--runs N] [--only micro,webhook,kafka]
//
// (a) micro, one process, no I/O: N envelopes handed to the real pipeline (createRouter +
//     createPipeline + createDispatcher from dist/) whose one sink is a no-op (send() answers ok at
//     once); µs per event = wall time ÷ N, from the first hand-over to the last delivery heard. Cases:
//     the dispatcher alone (deliverTo, no router, no pipeline: its own cost), the pipeline without a
//     filter or transform, with a CEL filter, with a JSONata transform, with a module transform, and
//     with a filter and a JSONata transform. Runs interleaved (run r of every case, in an order rotated
//     each run, then run r + 1); medians. The filter lets every event through, so every case sends
//     the same events; the "extra" column is the case's median minus the plain pipeline's.
// (b) backlog, against real services: a PostgreSQL 15 server of the benchmark's own
//     (bench/lib/pg-server.mjs), a table captured by the statement trigger, N rows inserted in one
//     transaction while the bridge is down, then the bridge (createBridge from dist/, what `sidekick
//     run` builds) drains them to the webhook receiver of bench/webhook.mjs (a child process
//     answering 204 at once) or to the Kafka mock of scripts/services.sh (acks=all); events/s = N ÷
//     (bridge start → the last acknowledgement, taken when the sink's send() returned). Each sink runs
//     with shaping off (a plain route) and on (a CEL filter every row passes plus the JSONata
//     transform; and the filter plus the same transform as a module), interleaved run by run, the
//     order rotated each run.
//
// Target (pass/fail), a ratio to the same run, never absolute events/s: backlog events/s with the
// filter and transform ÷ events/s without them (shaping off), median of the per-run ratios, ≥ 0.85×,
// for each transform kind (issue 18:
// "filter + transform must not cut that throughput by more than 15 %"). The micro figures have no
// target; they say where the time goes.
// Medians and formatting: bench/lib/stats.mjs. Prints Markdown and writes bench/results/shaping.md.
import { fork } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { createBridge } from '../dist/src/bridge.js';
import { resolveCaptures } from '../dist/src/capture/catalog.js';
import { captureSpecsFromConfig } from '../dist/src/capture/spec.js';
import { captureStatements } from '../dist/src/capture/sql.js';
import { parseConfig } from '../dist/src/config.js';
import { createDispatcher } from '../dist/src/dispatcher/index.js';
import { createLogger } from '../dist/src/logger.js';
import { createPipeline } from '../dist/src/pipeline.js';
import { createRouter } from '../dist/src/router.js';
import { migrate } from '../dist/src/sql/migrate.js';
import { sinkDefinitions } from '../dist/sinks/index.js';
import { startServer } from './lib/pg-server.mjs';
import { kafkaControl, requireService, servicesEnv } from './lib/services.mjs';
import { clock, fmt, median, medianOf, ratioTarget, sleep } from './lib/stats.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : fallback;
};
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--quick') continue;
  if (['--runs', '--only'].includes(args[i])) {
    i++;
    continue;
  }
  throw new Error(`unknown argument ${args[i]} (use --quick, --runs N, --only micro,webhook,kafka)`);
}
const quick = args.includes('--quick');
const RUNS = Number(option('--runs', quick ? 2 : 5));
const ONLY = option('--only', '')
  .split(',')
  .map((s) => s.trim())
  .filter(Boolean);
const wanted = (id) => ONLY.length === 0 || ONLY.includes(id);
const MICRO_N = quick ? 20_000 : 200_000;
const BACKLOG = quick ? 10_000 : 100_000;
const MIN_RATIO = 0.85;
if (!(RUNS >= 1)) throw new Error('--runs must be ≥ 1');

const say = (line) => process.stderr.write(`${line}\n`);
const quiet = createLogger({ level: 'silent', destination: new Writable({ write: (_c, _e, cb) => cb() }) });
const logger = createLogger({ level: process.env.LOG_LEVEL ?? 'warn' });

// What shaping does in both parts: a filter every row passes (so both sides send the same events) and
// a transform of the kind the docs show.
const FILTER = 'op == "INSERT" && new.status == "new"';
const JSONATA = '{"text": "Order " & $string(new.id) & " for " & new.customer, "total": new.total}';
const MODULE_SOURCE = 'export default (e) => ({ text: `Order ${e.new.id} for ${e.new.customer}`, total: e.new.total });\n';

// ---- (a) micro: the pipeline with a no-op sink -------------------------------------------------------
const OK = Object.freeze({ ok: true });
function noopSink() {
  return {
    name: 'noop',
    type: 'noop',
    ordered: true,
    async start() {},
    async send(batch) {
      return batch.map(() => OK);
    },
    async stop() {},
  };
}
const DISPATCH = {
  retry: { attempts: 3, initialDelay: 100, maxDelay: 1_000, maxAge: 60_000 },
  concurrency: 8,
  batch: { size: 500, linger: 0 },
  maxQueued: 10_000_000,
};

function envelopes(n) {
  const at = new Date().toISOString();
  return Array.from({ length: n }, (_, i) => ({
    id: `e${i}`,
    source: 'table',
    channel: 'public.orders',
    op: 'INSERT',
    schema: 'public',
    table: 'orders',
    key: String(i + 1),
    new: { id: i + 1, customer: `c-${(i + 1) % 997}`, total: (i + 1) * 0.37, status: 'new' },
    old: null,
    at,
    txid: '1000',
  }));
}

/** One micro case: `handOver(envelope, receiver)` for each of `events`; resolves with µs per event. */
function timeCase(handOver, events) {
  return new Promise((resolve, reject) => {
    let left = events.length;
    const receiver = {
      delivered(d) {
        if (d.status !== 'delivered') reject(new Error(`an event ended ${d.status}${d.error ? `: ${d.error.message}` : ''}`));
        else if (--left === 0) resolve(((clock() - t0) * 1000) / events.length);
      },
    };
    const t0 = clock();
    for (const e of events) handOver(e, receiver);
  });
}

async function micro() {
  const dir = mkdtempSync(join(tmpdir(), 'sk-bench-shaping-'));
  const shapeFile = join(dir, 'shape.mjs');
  writeFileSync(shapeFile, MODULE_SOURCE);
  const dispatch = () => createDispatcher({ sink: noopSink(), options: DISPATCH, logger: quiet });
  const viaPipeline = (route) => {
    const dispatcher = dispatch();
    const pipeline = createPipeline({
      router: createRouter([{ from: ['public.orders'], to: ['noop'], ...route }]),
      dispatchers: new Map([['noop', dispatcher]]),
      logger: quiet,
    });
    return {
      ready: pipeline.ready,
      handOver: (e, receiver) => {
        for (const sink of pipeline.route(e)) pipeline.deliver(sink, e, receiver, true);
      },
      stop: () => dispatcher.stop(1_000),
    };
  };
  const alone = dispatch();
  const cases = [
    {
      name: 'dispatcher alone (deliverTo; no router, no pipeline)',
      ready: Promise.resolve(),
      handOver: (e, r) => alone.deliverTo(e, r, { force: true }),
      stop: () => alone.stop(1_000),
    },
    { name: 'pipeline, no filter, no transform', ...viaPipeline({}) },
    { name: `CEL filter \`${FILTER}\``, ...viaPipeline({ filter: FILTER }) },
    { name: 'JSONata transform', ...viaPipeline({ transform: JSONATA }) },
    { name: 'module transform', ...viaPipeline({ transform: { module: shapeFile } }) },
    { name: 'CEL filter + JSONata transform', ...viaPipeline({ filter: FILTER, transform: JSONATA }) },
  ];
  await Promise.all(cases.map((c) => c.ready));
  const results = cases.map(() => []);
  try {
    // Warm-up (JIT), not counted.
    for (const c of cases) await timeCase(c.handOver, envelopes(Math.min(MICRO_N, 5_000)));
    for (let run = 1; run <= RUNS; run++) {
      for (let k = 0; k < cases.length; k++) {
        const i = (k + run) % cases.length;
        const events = envelopes(MICRO_N);
        results[i].push(await timeCase(cases[i].handOver, events));
      }
      say(`  micro run ${run}/${RUNS}: ${cases.map((_c, i) => `${fmt(results[i].at(-1), 2)} µs`).join(', ')}`);
    }
  } finally {
    for (const c of cases) await c.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  const plain = median(results[1]);
  const lines = [
    `### Per event, in one process (no I/O; a no-op sink)${quick ? ' (--quick)' : ''}`,
    '',
    `${fmt(MICRO_N)} envelopes per run, medians of ${RUNS} interleaved runs. Filter: \`${FILTER}\` (every event passes). JSONata: ` +
      `\`${JSONATA.replace(/\|/g, '\\|')}\`. Module: the same object from a JavaScript function.`,
    '',
    '| case | µs per event | extra vs the plain pipeline |',
    '|---|---:|---:|',
    ...cases.map((c, i) => {
      const us = median(results[i]);
      return `| ${c.name.replace(/\|/g, '\\|')} | ${fmt(us, 2)} | ${i < 2 ? '' : `+${fmt(us - plain, 2)} µs`} |`;
    }),
    '',
  ];
  return lines;
}

// ---- (b) backlog through the real outbox, shaping off vs on -----------------------------------------
let acked;
// Every sink definition wrapped to count acknowledged events (the sink's send() returned ok) and
// note when the last one came: the same clock for the webhook and Kafka, and no receiver round trip.
const countingDefinitions = sinkDefinitions.map((definition) =>
  Object.freeze({
    ...definition,
    create(options, context) {
      const sink = definition.create(options, context);
      const counted = Object.create(sink);
      counted.send = (batch, signal) =>
        sink.send(batch, signal).then((outcomes) => {
          if (acked) {
            for (const o of outcomes) if (o.ok) acked.n++;
            acked.last = clock();
          }
          return outcomes;
        });
      return counted;
    },
  }),
);

function startReceiver() {
  const child = fork(join(here, 'webhook.mjs'), ['--receiver', '0'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('message', ({ port }) =>
      resolve({
        url: `http://127.0.0.1:${port}`,
        drain: () =>
          new Promise((r) => {
            child.once('message', r);
            child.send('collect');
          }),
        stop: () =>
          new Promise((r) => {
            child.once('exit', r);
            child.send('exit');
          }),
      }),
    );
  });
}

async function backlog() {
  const env = servicesEnv();
  const targets = [];
  if (wanted('webhook')) {
    const receiver = await startReceiver();
    targets.push({
      id: 'webhook',
      name: 'webhook → receiver answering 204 at once',
      sink: { type: 'webhook', url: `${receiver.url}/hooks/{schema}/{table}` },
      reset: () => receiver.drain(),
      close: () => receiver.stop(),
    });
  }
  if (wanted('kafka')) {
    const brokers = requireService(env, 'KAFKA_BROKERS');
    const topic = `bench-shaping-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
    await kafkaControl(env, `create ${topic} 4`);
    targets.push({
      id: 'kafka',
      name: 'Kafka (librdkafka mock cluster; acks=all)',
      sink: { type: 'kafka', brokers, topic, acks: 'all' },
      reset: async () => {},
      close: async () => {},
    });
  }
  if (targets.length === 0) return [];
  say('shaping bench: starting a PostgreSQL server of its own (fsync=on) …');
  const server = await startServer({ fsync: 'on', synchronous_commit: 'on', max_wal_size: '8GB', checkpoint_timeout: '30min' });
  const admin = new pg.Client({ connectionString: server.url });
  await admin.connect();
  await admin.query('CREATE DATABASE bench');
  await admin.end();
  const url = server.url.replace(/\/postgres$/, '/bench');
  const db = new pg.Client({ connectionString: url });
  await db.connect();
  const results = new Map(targets.map((t) => [t.id, { off: [], jsonata: [], module: [] }]));
  let dir;
  try {
    await migrate(db);
    await db.query('CREATE TABLE orders (id bigserial PRIMARY KEY, customer text NOT NULL, total numeric NOT NULL, status text NOT NULL)');
    const specs = captureSpecsFromConfig([{ table: 'public.orders', columns: '*', mode: 'statement' }], 'bench');
    await db.query(captureStatements(await resolveCaptures(db, specs)));
    dir = mkdtempSync(join(tmpdir(), 'sk-bench-shaping-'));
    const shapeFile = join(dir, 'shape.mjs');
    writeFileSync(shapeFile, MODULE_SOURCE);
    const SHAPES = {
      off: {},
      jsonata: { filter: FILTER, transform: JSONATA },
      module: { filter: FILTER, transform: { module: shapeFile } },
    };
    const route = (shaping) => ({ from: '*', to: 'sink', ...SHAPES[shaping] });

    async function run(target, n, shaping) {
      await db.query('TRUNCATE orders, sidekick.outbox, sidekick.row_changes, sidekick.deliveries, sidekick.dead_letters');
      await db.query('CHECKPOINT');
      await db.query(`INSERT INTO orders (customer, total, status) SELECT 'c-' || (g % 997), g * 0.37, 'new' FROM generate_series(1, ${n}) g`);
      const bridge = createBridge({
        config: parseConfig(
          { database: url, capture: [{ table: 'public.orders' }], sinks: { sink: target.sink }, routes: [route(shaping)] },
          { file: 'bench', env: {}, sinks: countingDefinitions },
        ),
        logger,
      });
      acked = { n: 0, last: 0 };
      const a = acked;
      const t0 = clock();
      await bridge.start();
      const deadline = Date.now() + 600_000;
      while (a.n < n && Date.now() < deadline) await sleep(10);
      await bridge.stop();
      acked = undefined;
      await target.reset();
      if (a.n < n) throw new Error(`${target.id} backlog (shaping: ${shaping}): ${a.n} of ${n} acknowledged`);
      return n / ((a.last - t0) / 1000);
    }

    for (const target of targets) {
      say(`  warming up ${target.id} …`);
      for (const shaping of Object.keys(SHAPES)) await run(target, Math.min(BACKLOG, 2_000), shaping);
    }
    for (let r = 1; r <= RUNS; r++) {
      for (const target of targets) {
        const res = results.get(target.id);
        // Rotated each run, so that no variant always runs first (a warmer or cooler machine).
        const names = Object.keys(SHAPES);
        const order = names.map((_, k) => names[(k + r) % names.length]);
        const eps = {};
        for (const shaping of order) eps[shaping] = await run(target, BACKLOG, shaping);
        for (const name of names) res[name].push({ eps: eps[name], ratio: eps[name] / eps.off });
        say(
          `  ${target.id} run ${r}/${RUNS}: off ${fmt(eps.off)} events/s, filter + JSONata ${fmt(eps.jsonata)} (${(eps.jsonata / eps.off).toFixed(2)}×), ` +
            `filter + module ${fmt(eps.module)} (${(eps.module / eps.off).toFixed(2)}×)`,
        );
      }
    }
  } finally {
    acked = undefined;
    if (dir) rmSync(dir, { recursive: true, force: true });
    for (const target of targets) await target.close().catch((error) => say(`  closing ${target.id}: ${error.message}`));
    await db.end().catch(() => {});
    await server.stop();
  }
  const cell = (res, name) => {
    const ratio = medianOf(res[name], 'ratio');
    return `${fmt(medianOf(res[name], 'eps'))} | ${ratio.toFixed(2)}× | ${ratioTarget(ratio, MIN_RATIO, 'shaping off')}`;
  };
  return [
    `### Backlog through the outbox, shaping off vs on${quick ? ' (--quick)' : ''}`,
    '',
    `PostgreSQL 15 (a server of the benchmark's own, fsync=on), a statement trigger, ${fmt(BACKLOG)} rows inserted in one transaction while the ` +
      `bridge was down, then drained by the bridge (dist/, default settings). On: the route has \`filter: '${FILTER}'\` (every row passes) and ` +
      `the JSONata transform above, or the same transform as a module. Medians of ${RUNS} runs, the three variants interleaved (order rotated ` +
      'each run); each ratio is the median of the per-run ratios on ÷ off.',
    '',
    '| sink | events/s, shaping off | events/s, filter + JSONata | × off | target | events/s, filter + module | × off | target |',
    '|---|---:|---:|---:|---|---:|---:|---|',
    ...targets.map((t) => {
      const res = results.get(t.id);
      return `| ${t.name} | ${fmt(medianOf(res.off, 'eps'))} | ${cell(res, 'jsonata')} | ${cell(res, 'module')} |`;
    }),
    '',
  ];
}

async function main() {
  const loadAtStart = loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');
  const lines = [`## Shaping: route filters and transforms${quick ? ' (--quick)' : ''}`, ''];
  if (wanted('micro')) lines.push(...(await micro()));
  lines.push(...(await backlog()));
  lines.push(
    `Machine: ${cpus()[0]?.model?.trim()}, ${cpus().length} cores; Node ${process.version}; ${new Date().toISOString()}; load average at the ` +
      `start: ${loadAtStart}, at the end: ${loadavg()
        .map((l) => l.toFixed(2))
        .join(' ')}. Kafka is librdkafka's in-memory mock cluster, not a real Kafka.`,
    '',
  );
  const text = lines.join('\n');
  process.stdout.write(`${text}\n`);
  mkdirSync(join(here, 'results'), { recursive: true });
  writeFileSync(join(here, 'results', 'shaping.md'), `${text}\n`);
}

main().then(
  () => process.exit(0),
  (error) => {
    process.stderr.write(`shaping bench failed: ${error.stack ?? error}\n`);
    process.exit(1);
  },
);
