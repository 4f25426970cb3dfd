#!/usr/bin/env node
// bench/brokers-kafka.mjs — the Kafka sink's throughput and latency, against a bare kafkajs
// producer measured in the same run.
//
//   npm run build && node bench/brokers-kafka.mjs [--quick] [--runs N] [--events N]
//
// Broker: KAFKA_BROKERS / KAFKA_CONTROL from the environment, else from the services env file
// ($SIDEKICK_SERVICES_DIR or /var/tmp/pg-sidekick-services/env, written by scripts/services.sh). On these machines that
// is librdkafka's in-memory mock cluster (Kafka wire protocol, no disk, no replication): figures
// are an upper bound for the client side, not what a real Kafka cluster would give.
//
// Scenarios (each run uses fresh topics; medians over the runs):
//   backlog   N row-change envelopes all available at t0 (a drained outbox backlog), through the real
//             dispatcher (per-key lanes, batches of 500, 8 in flight) and the kafka sink, acks=all.
//             Latency = t0 → broker ack, so under a backlog it is mostly queueing.
//   baseline  the same envelopes as JSON records (same key, headers, batch size, in-flight count,
//             acks) through one bare kafkajs producer (bench/lib/bare-clients.mjs: batches of 500,
//             8 sendBatch calls in flight, no per-key lanes).
//   live      a paced stream (events arrive at a fixed rate) through dispatcher + sink:
//             latency = arrival → broker ack, the latency a row change sees when nothing is queued.
// Source: `backlogSource` / `pacedSource` below produce {envelope, bornAt} pairs; when the outbox
// drain lands, a source reading committed rows (bornAt = commit time) plugs in the same way.
//
// No pass/fail target here: the figures are informational, the backlog's as a ratio to the bare
// kafkajs producer of the same run. The Kafka sink's target is in bench/rows.mjs (row changes through
// the outbox, as a ratio to bare kafkajs measured in that run). Medians and percentiles:
// bench/lib/stats.mjs; the broker's address and control port: bench/lib/services.mjs.

import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { sinkDefinitions } from '../dist/sinks/index.js';
import { parseConfig } from '../dist/src/config.js';
import { createDispatcher } from '../dist/src/dispatcher/index.js';
import { envelopeJson } from '../dist/src/envelope.js';
import { createLogger } from '../dist/src/logger.js';
import { bareKafka } from './lib/bare-clients.mjs';
import { kafkaControl, requireService, servicesEnv } from './lib/services.mjs';
import { fmt, medianOf, percentile } from './lib/stats.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const quick = args.includes('--quick');
const argValue = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] !== undefined ? Number(args[i + 1]) : fallback;
};
const RUNS = argValue('--runs', 3);
const EVENTS = argValue('--events', quick ? 20_000 : 200_000);
const KEYS = Math.max(1, Math.floor(EVENTS / 40));
const LIVE_RATE = quick ? 5_000 : 10_000;
const LIVE_SECONDS = quick ? 1 : 3;
const BATCH = 500;
const IN_FLIGHT = 8;
const PARTITIONS = 4;

const env = servicesEnv();
const BROKERS = requireService(env, 'KAFKA_BROKERS');
requireService(env, 'KAFKA_CONTROL');

let topicSeq = 0;
async function newTopic(what) {
  const name = `bench-kafka-${what}-${process.pid}-${Date.now().toString(36)}-${++topicSeq}`;
  await kafkaControl(env, `create ${name} ${PARTITIONS}`);
  return name;
}

/** Row changes of public.orders: KEYS rows, each inserted then updated, interleaved (like a busy table). */
function rowChanges(n) {
  const out = [];
  const base = Date.now();
  for (let i = 0; i < n; i++) {
    const k = i % KEYS;
    const version = Math.floor(i / KEYS);
    const row = { id: k, customer: `c-${k % 997}`, status: version === 0 ? 'new' : 'paid', version, total: (k * 3.7).toFixed(2) };
    out.push({
      id: String(1_000_000 + i),
      source: 'table',
      channel: 'public.orders',
      op: version === 0 ? 'INSERT' : 'UPDATE',
      schema: 'public',
      table: 'orders',
      key: String(k),
      new: row,
      old: version === 0 ? null : { ...row, version: version - 1 },
      payload: undefined,
      at: new Date(base + i).toISOString(),
      txid: String(7_000_000 + i),
    });
  }
  return out;
}

/** A backlog: everything available at once. */
function backlogSource(envelopes) {
  return { envelopes, paced: false };
}
/** A paced stream: envelope i arrives at i / rate seconds. */
function pacedSource(envelopes, rate) {
  return { envelopes, paced: true, rate };
}

const quiet = createLogger({ level: 'silent', destination: new Writable({ write: (_c, _e, cb) => cb() }) });

function configure(topic) {
  const config = parseConfig(
    {
      sinks: { kafka: { type: 'kafka', brokers: BROKERS, topic, acks: 'all', batch: { size: BATCH }, concurrency: IN_FLIGHT } },
    },
    { sinks: sinkDefinitions },
  );
  return config.sinks[0];
}

/** dispatcher + kafka sink, fed by `source`; latency per event = bornAt → delivered. */
async function runSidekick(source) {
  const topic = await newTopic('sidekick');
  const entry = configure(topic);
  const sink = entry.definition.create(entry.options, { name: 'kafka', logger: quiet, database: {} });
  await sink.start(new AbortController().signal);
  const dispatcher = createDispatcher({ sink, options: entry.dispatch, logger: quiet });
  const { envelopes } = source;
  const latencies = new Float64Array(envelopes.length);
  let failed = 0;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const done = [];
  for (let i = 0; i < envelopes.length; i++) {
    if (source.paced) {
      const due = t0 + (i * 1000) / source.rate;
      const wait = due - performance.now();
      if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    } else if (i % 1000 === 0) {
      // What the durable drain does: at most outbox.sinkBuffer (10 000) events of a sink in memory.
      while (dispatcher.size >= 10_000) await new Promise((r) => setTimeout(r, 1));
    }
    const bornAt = source.paced ? t0 + (i * 1000) / source.rate : t0;
    done.push(
      dispatcher.deliver(envelopes[i]).then((d) => {
        if (d.status !== 'delivered') failed++;
        latencies[i] = performance.now() - bornAt;
      }),
    );
  }
  await Promise.all(done);
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  await dispatcher.stop(5_000);
  await sink.stop();
  if (failed > 0) throw new Error(`${failed} envelopes not delivered`);
  latencies.sort();
  return {
    rate: envelopes.length / seconds,
    p50: percentile(latencies, 0.5),
    p99: percentile(latencies, 0.99),
    cpu: (cpu.user + cpu.system) / envelopes.length,
  };
}

/** The bare kafkajs producer: the same records, batches of BATCH, IN_FLIGHT sendBatch calls at once; latency = t0 → ack. */
async function runBaseline(envelopes) {
  const topic = await newTopic('baseline');
  const bare = await bareKafka(BROKERS, topic, (e) => JSON.stringify(envelopeJson(e)), { size: BATCH, concurrency: IN_FLIGHT });
  const latencies = new Float64Array(envelopes.length);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await Promise.all(
    envelopes.map((e, i) =>
      bare.deliver(e).then(() => {
        latencies[i] = performance.now() - t0;
      }),
    ),
  );
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  await bare.close();
  latencies.sort();
  return {
    rate: envelopes.length / seconds,
    p50: percentile(latencies, 0.5),
    p99: percentile(latencies, 0.99),
    cpu: (cpu.user + cpu.system) / envelopes.length,
  };
}

const results = { baseline: [], backlog: [], live: [] };
const envelopes = rowChanges(EVENTS);
const liveEnvelopes = rowChanges(LIVE_RATE * LIVE_SECONDS);
// One warm-up pass of each (JIT, connections, topic metadata), not counted.
await runBaseline(envelopes.slice(0, 5_000));
await runSidekick(backlogSource(envelopes.slice(0, 5_000)));
for (let run = 1; run <= RUNS; run++) {
  // Alternate the order so neither side always runs on a warmer (or more loaded) broker.
  if (run % 2) {
    results.baseline.push(await runBaseline(envelopes));
    results.backlog.push(await runSidekick(backlogSource(envelopes)));
  } else {
    results.backlog.push(await runSidekick(backlogSource(envelopes)));
    results.baseline.push(await runBaseline(envelopes));
  }
  results.live.push(await runSidekick(pacedSource(liveEnvelopes, LIVE_RATE)));
  const last = (k) => results[k][results[k].length - 1];
  process.stderr.write(
    `run ${run}/${RUNS}: baseline ${fmt(last('baseline').rate)}/s, sidekick ${fmt(last('backlog').rate)}/s, live p99 ` +
      `${fmt(last('live').p99, 1)} ms\n`,
  );
}

const summary = Object.fromEntries(
  Object.entries(results).map(([k, rs]) => [
    k,
    {
      rate: medianOf(rs, 'rate'),
      p50: medianOf(rs, 'p50'),
      p99: medianOf(rs, 'p99'),
      cpu: medianOf(rs, 'cpu'),
    },
  ]),
);
const ms = (n) => `${fmt(n, 1)} ms`;
const us = (n) => `${fmt(n, 1)} µs`;
const base = summary.baseline.rate;
const lines = [
  `## Kafka sink — ${fmt(EVENTS)}-event backlog, medians of ${RUNS} runs${quick ? ' (--quick)' : ''}`,
  '',
  `Broker: librdkafka mock cluster (in-memory, Kafka wire protocol, 1 broker, ${PARTITIONS} partitions; not a real Kafka). ` +
    `Node ${process.version}, kafkajs 2.2.4, acks=all, batches of ${BATCH}, ${IN_FLIGHT} requests in flight, ${fmt(KEYS)} keys.`,
  '',
  '| scenario | events/s | vs bare kafkajs | p50 latency | p99 latency | client CPU per event |',
  '|---|---:|---:|---:|---:|---:|',
  `| bare kafkajs producer (baseline; t0 → ack) | ${fmt(base)} | 1.00× | ${ms(summary.baseline.p50)} | ${ms(summary.baseline.p99)} | ` +
    `${us(summary.baseline.cpu)} |`,
  `| pg-sidekick dispatcher + kafka sink, backlog (t0 → ack) | ${fmt(summary.backlog.rate)} | ${(summary.backlog.rate / base).toFixed(2)}× | ` +
    `${ms(summary.backlog.p50)} | ${ms(summary.backlog.p99)} | ${us(summary.backlog.cpu)} |`,
  `| pg-sidekick, live stream at ${fmt(LIVE_RATE)}/s (arrival → ack) | ${fmt(summary.live.rate)} | — | ${ms(summary.live.p50)} | ` +
    `${ms(summary.live.p99)} | ${us(summary.live.cpu)} |`,
  '',
  'Backlog latency is measured from the moment the whole backlog is available, so it is mostly queueing ' +
    '(p50 ≈ time to drain half of it). The live row is the latency an event sees when nothing is queued. ' +
    'Source: envelopes generated in memory (enqueue → broker ack); commit-to-broker needs the outbox drain. ' +
    `CPU = this Node process's user+system time per event (the broker runs in another process). Load average at the end: ${loadavg()
      .map((l) => l.toFixed(1))
      .join(' ')} on ${cpus().length} cores.`,
  '',
];
const table = lines.join('\n');
process.stdout.write(`${table}\n`);
mkdirSync(join(ROOT, 'bench', 'results'), { recursive: true });
writeFileSync(join(ROOT, 'bench', 'results', 'brokers-kafka.md'), `${table}\n`);
