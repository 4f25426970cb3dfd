#!/usr/bin/env node
// Broker sinks benchmark: RabbitMQ (amqp, publisher confirms) and Redis Streams (redis-stream).
// For each broker, events/s and enqueue→ack latency (p50/p99) of pg-sidekick's sink behind the real
// dispatcher, draining a backlog and at a steady rate, against a bare client baseline measured in the
// same run with the same batching: amqplib on a confirm channel alone, and ioredis pipelined XADD alone.
//
//   npm run build && node bench/brokers-amqp-redis.mjs [--quick] [--runs N] [--only amqp|redis] [--source memory]
//
// Brokers: the ones scripts/services.sh starts (AMQP_URL / REDIS_URL from the environment, else from
// $SIDEKICK_SERVICES_DIR/env or /var/tmp/pg-sidekick-services/env). RabbitMQ: a durable queue bound to the exchange and
// persistent messages (confirmed once on disk, as in production). Redis: the test instance (no
// persistence). Nothing consumes during a run; the queue is purged and the stream deleted afterwards.
//
// Latency is measured from the moment an envelope is handed to the source until the dispatcher
// reports it delivered (the broker's confirm / the XADD reply). Sources are pluggable: `memory` (now)
// hands envelopes straight to the dispatcher; an outbox source (commit → ack) plugs in as another
// entry of SOURCES with the same interface.
//
// No pass/fail target here: the figures are informational, each with its ratio to the bare client of
// the same run (bench/lib/bare-clients.mjs). The RabbitMQ and Redis sinks' targets are in
// bench/rows.mjs (row changes through the outbox, as ratios to these bare clients measured in that
// run). Medians and percentiles: bench/lib/stats.mjs; broker addresses: bench/lib/services.mjs.
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import amqp from 'amqplib';
import { Redis } from 'ioredis';
import { bareAmqp, bareRedis } from './lib/bare-clients.mjs';
import { requireService, servicesEnv } from './lib/services.mjs';
import { fmt, medianOf, percentile } from './lib/stats.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const dist = (p) => join(here, '../dist', p);
const { parseConfig } = await import(dist('src/config.js'));
const { sinkDefinitions } = await import(dist('sinks/index.js'));
const { createDispatcher } = await import(dist('src/dispatcher/index.js'));
const { createLogger } = await import(dist('src/logger.js'));
const { envelopeJson } = await import(dist('src/envelope.js'));

// ---- arguments and environment -------------------------------------------------------------------
function parseArgs(argv) {
  const args = { quick: false, runs: 3, only: undefined, source: 'memory' };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--quick') args.quick = true;
    else if (argv[i] === '--runs') args.runs = Number(argv[++i]);
    else if (argv[i] === '--only') args.only = argv[++i];
    else if (argv[i] === '--source') args.source = argv[++i];
    else throw new Error(`unknown argument ${argv[i]} (use --quick, --runs N, --only amqp|redis, --source memory)`);
  }
  if (!(args.runs >= 1)) throw new Error('--runs must be ≥ 1');
  if (args.only && !['amqp', 'redis'].includes(args.only)) throw new Error('--only amqp|redis');
  if (!(args.source in SOURCES)) throw new Error(`--source: one of ${Object.keys(SOURCES).join(', ')}`);
  return args;
}

// ---- helpers --------------------------------------------------------------------------------------
const quiet = createLogger({ level: 'warn', destination: new Writable({ write: (_c, _e, cb) => cb() }) });
const rand = () => Math.random().toString(36).slice(2, 10);

let seq = 0;
/** Row changes over 1024 keys (several events per key, so per-key order is exercised). */
function envelopes(n) {
  const at = new Date().toISOString();
  return Array.from({ length: n }, (_, i) => ({
    id: `b${process.pid}-${++seq}`,
    source: 'table',
    channel: 'public.orders',
    op: 'INSERT',
    schema: 'public',
    table: 'orders',
    key: String(i % 1024),
    new: { id: i, customer: 'c-42', total: 123.45, status: 'new' },
    old: null,
    at,
    txid: '1000',
  }));
}

// ---- sources: how envelopes reach the dispatcher ---------------------------------------------------
/**
 * A source hands envelopes to `deliver` and resolves with one latency (ms, hand-over → delivered) per
 * envelope plus the wall time of the whole run. `backlog`: all at once. `steady`: `rate` per second.
 */
const SOURCES = {
  memory: {
    async backlog(items, deliver) {
      const t0 = performance.now();
      const lat = await Promise.all(
        items.map((e) =>
          deliver(e).then((d) => {
            if (d.status !== 'delivered') throw new Error(`${e.id}: ${d.status}`);
            return performance.now() - t0;
          }),
        ),
      );
      return { seconds: (performance.now() - t0) / 1000, latencies: lat };
    },
    async steady(items, deliver, rate) {
      const t0 = performance.now();
      const pending = [];
      const tick = 10; // ms
      const perTick = Math.max(1, Math.round((rate * tick) / 1000));
      for (let i = 0; i < items.length; i += perTick) {
        const due = t0 + (i / rate) * 1000;
        const wait = due - performance.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        for (const e of items.slice(i, i + perTick)) {
          const handed = performance.now();
          pending.push(
            deliver(e).then((d) => {
              if (d.status !== 'delivered') throw new Error(`${e.id}: ${d.status}`);
              return performance.now() - handed;
            }),
          );
        }
      }
      const lat = await Promise.all(pending);
      return { seconds: (performance.now() - t0) / 1000, latencies: lat };
    },
  },
};

// ---- brokers --------------------------------------------------------------------------------------
/** The sink as `sidekick run` builds it: config → definition → dispatcher with the sink's defaults. */
function sidekickTarget(sinkConfig) {
  // maxQueued: the memory source hands the whole backlog over at once (an outbox source would wait
  // for room instead); everything else is the sink's defaults.
  const config = parseConfig({ sinks: { bench: { maxQueued: 1_000_000, ...sinkConfig } } }, { env: {}, sinks: sinkDefinitions });
  const entry = config.sinks[0];
  return {
    dispatch: entry.dispatch,
    async open() {
      const sink = entry.definition.create(entry.options, { name: 'bench', logger: quiet, database: {} });
      await sink.start(new AbortController().signal);
      const dispatcher = createDispatcher({ sink, options: entry.dispatch, logger: quiet });
      return {
        deliver: (e) => dispatcher.deliver(e),
        async close() {
          await dispatcher.stop(5_000);
          await sink.stop();
        },
      };
    },
  };
}

/**
 * A bare client of bench/lib/bare-clients.mjs with the sink's dispatcher defaults (batch size, batches
 * in flight), behind the dispatcher's `deliver` interface, so the sources and the latency measurement
 * are identical; it just has no per-key lanes, retries or checks.
 */
function asDispatcher(bare) {
  return {
    deliver: (e) =>
      bare.deliver(e).then(
        () => ({ status: 'delivered', attempts: 1 }),
        (error) => ({ status: 'dead', attempts: 1, error }),
      ),
    close: () => bare.close(),
  };
}
const body = (e) => JSON.stringify(envelopeJson(e));
const batching = (sidekick) => ({ size: sidekick.dispatch.batch.size, concurrency: sidekick.dispatch.concurrency });

async function amqpBroker(url) {
  const exchange = `bench-${rand()}`;
  const queue = `bench-${rand()}`;
  const admin = await amqp.connect(url);
  const ch = await admin.createChannel();
  await ch.assertExchange(exchange, 'topic', { durable: true });
  await ch.assertQueue(queue, { durable: true });
  await ch.bindQueue(queue, exchange, '#');
  const sidekick = sidekickTarget({ type: 'amqp', url, exchange, routingKey: '{schema}.{table}.{op}' });
  return {
    name: 'RabbitMQ (amqp, confirms)',
    sidekick,
    async bare() {
      return asDispatcher(await bareAmqp(url, exchange, body, batching(sidekick)));
    },
    async count() {
      return (await ch.checkQueue(queue)).messageCount;
    },
    async reset() {
      await ch.purgeQueue(queue);
    },
    async close() {
      await ch.deleteQueue(queue);
      await ch.deleteExchange(exchange);
      await admin.close();
    },
  };
}

async function redisBroker(url) {
  const stream = `bench:${rand()}`;
  const admin = new Redis(url);
  const sidekick = sidekickTarget({ type: 'redis-stream', url, stream });
  return {
    name: 'Redis Streams (redis-stream)',
    sidekick,
    async bare() {
      return asDispatcher(bareRedis(url, stream, body, batching(sidekick)));
    },
    async count() {
      return admin.xlen(stream);
    },
    async reset() {
      await admin.del(stream);
    },
    async close() {
      await admin.del(stream);
      admin.disconnect();
    },
  };
}

// ---- one measurement --------------------------------------------------------------------------------
async function measure(broker, open, scenario, n, source, rate) {
  const items = envelopes(n);
  const client = await open();
  let result;
  try {
    result = scenario === 'backlog' ? await source.backlog(items, client.deliver) : await source.steady(items, client.deliver, rate);
  } finally {
    await client.close();
  }
  const landed = await broker.count();
  await broker.reset();
  if (landed < n) throw new Error(`${broker.name} ${scenario}: only ${landed} of ${n} landed`);
  const sorted = result.latencies.sort((a, b) => a - b);
  return { eps: n / result.seconds, p50: percentile(sorted, 0.5), p99: percentile(sorted, 0.99) };
}

// ---- main -------------------------------------------------------------------------------------------
const args = parseArgs(process.argv.slice(2));
const env = servicesEnv();
const backlog = args.quick ? 20_000 : 200_000;
const steadyRate = 2_000;
const steadyN = args.quick ? 4_000 : 20_000;
const source = SOURCES[args.source];

const brokers = [];
if (!args.only || args.only === 'redis') brokers.push(() => redisBroker(requireService(env, 'REDIS_URL')));
if (!args.only || args.only === 'amqp') brokers.push(() => amqpBroker(requireService(env, 'AMQP_URL')));

const rows = [];
for (const make of brokers) {
  const broker = await make();
  try {
    for (const [scenario, n] of [
      ['backlog', backlog],
      ['steady', steadyN],
    ]) {
      const runs = { sidekick: [], bare: [] };
      for (let r = 0; r < args.runs; r++) {
        // Alternate who goes first, so neither always meets a warmer broker.
        const order = r % 2 === 0 ? ['bare', 'sidekick'] : ['sidekick', 'bare'];
        for (const who of order) {
          const open = who === 'bare' ? () => broker.bare() : () => broker.sidekick.open();
          runs[who].push(await measure(broker, open, scenario, n, source, steadyRate));
          process.stderr.write(`${broker.name} ${scenario} ${who} run ${r + 1}: ${fmt(runs[who].at(-1).eps)} events/s\n`);
        }
      }
      const m = (who, k) => medianOf(runs[who], k);
      rows.push({
        broker: broker.name,
        scenario: scenario === 'backlog' ? `backlog ${fmt(n)}` : `steady ${steadyRate}/s × ${fmt(n)}`,
        eps: m('sidekick', 'eps'),
        p50: m('sidekick', 'p50'),
        p99: m('sidekick', 'p99'),
        bareEps: m('bare', 'eps'),
        bareP50: m('bare', 'p50'),
        bareP99: m('bare', 'p99'),
        batch: `${broker.sidekick.dispatch.batch.size} × ${broker.sidekick.dispatch.concurrency}`,
      });
    }
  } finally {
    await broker.close();
  }
}

const ms = (x) => fmt(x, x < 10 ? 1 : 0);
const bareName = (broker) => (broker.startsWith('Redis') ? 'bare ioredis, pipelined XADD' : 'bare amqplib, confirm channel');
const lines = [
  `# Broker sinks: RabbitMQ and Redis Streams (${args.quick ? 'quick, ' : ''}medians of ${args.runs} run${args.runs === 1 ? '' : 's'}, source: ${args.source})`,
  '',
  '| broker | scenario | contender | events/s | p50 ms | p99 ms | vs bare | batch × in flight |',
  '|---|---|---|---:|---:|---:|---:|---|',
  ...rows.flatMap((r) => [
    `| ${r.broker} | ${r.scenario} | pg-sidekick (dispatcher + sink) | ${fmt(r.eps)} | ${ms(r.p50)} | ${ms(r.p99)} | ` +
      `${(r.eps / r.bareEps).toFixed(2)} | ${r.batch} |`,
    `| ${r.broker} | ${r.scenario} | ${bareName(r.broker)} | ${fmt(r.bareEps)} | ${ms(r.bareP50)} | ${ms(r.bareP99)} | 1.00 | ${r.batch} |`,
  ]),
  '',
  'Latency: hand-over to the dispatcher → delivery confirmed (RabbitMQ publisher confirm, Redis XADD reply).',
  'Bare clients: amqplib confirm channel / ioredis pipelined XADD, same message content and the same batch size and',
  'number of batches in flight as the sink, without per-key lanes, retries or per-item outcomes.',
  `Node ${process.version}; load average at the end ${loadavg()
    .map((x) => x.toFixed(1))
    .join(' ')} on ${cpus().length} CPUs; ${new Date().toISOString()}.`,
];
const text = `${lines.join('\n')}\n`;
process.stdout.write(text);
mkdirSync(join(here, 'results'), { recursive: true });
writeFileSync(join(here, 'results', 'brokers-amqp-redis.md'), text);
