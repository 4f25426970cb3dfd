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
//             acks) through one bare kafkajs producer: sendBatch in a loop, no per-key lanes.
//   live      a paced stream (events arrive at a fixed rate) through dispatcher + sink:
//             latency = arrival → broker ack, the latency a row change sees when nothing is queued.
// Source: `backlogSource` / `pacedSource` below produce {envelope, bornAt} pairs; when the outbox
// drain lands, a source reading committed rows (bornAt = commit time) plugs in the same way.

import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import net from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { Writable } from 'node:stream';
import { Kafka, logLevel, Partitioners } from 'kafkajs';
import { sinkDefinitions } from '../dist/sinks/index.js';
import { parseConfig } from '../dist/src/config.js';
import { createDispatcher } from '../dist/src/dispatcher/index.js';
import { envelopeJson } from '../dist/src/envelope.js';
import { createLogger } from '../dist/src/logger.js';

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

function servicesEnv() {
  const env = { ...process.env };
  const file = join(process.env.SIDEKICK_SERVICES_DIR ?? '/var/tmp/pg-sidekick-services', 'env');
  try {
    for (const line of readFileSync(file, 'utf8').split('\n')) {
      const i = line.indexOf('=');
      if (i > 0 && !env[line.slice(0, i)]) env[line.slice(0, i)] = line.slice(i + 1);
    }
  } catch {
    /* no env file: rely on the environment */
  }
  if (!env.KAFKA_BROKERS || !env.KAFKA_CONTROL) {
    throw new Error('KAFKA_BROKERS / KAFKA_CONTROL not set and no services env file: run scripts/services.sh up kafka');
  }
  return env;
}
const env = servicesEnv();

function control(command) {
  const [host, port] = env.KAFKA_CONTROL.split(':');
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), host);
    let buf = '';
    socket.setEncoding('utf8');
    socket.setTimeout(5_000, () => socket.destroy(new Error(`control ${command}: no answer`)));
    socket.on('data', (d) => {
      buf += d;
      if (!buf.includes('\n')) return;
      socket.end();
      const line = buf.trim();
      if (line.startsWith('ok')) resolve(line.slice(2).trim());
      else reject(new Error(`control ${command}: ${line}`));
    });
    socket.on('error', reject);
    socket.write(`${command}\n`);
  });
}

let topicSeq = 0;
async function newTopic(what) {
  const name = `bench-kafka-${what}-${process.pid}-${Date.now().toString(36)}-${++topicSeq}`;
  await control(`create ${name} ${PARTITIONS}`);
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
      sinks: { kafka: { type: 'kafka', brokers: env.KAFKA_BROKERS, topic, acks: 'all', batch: { size: BATCH }, concurrency: IN_FLIGHT } },
    },
    { sinks: sinkDefinitions },
  );
  return config.sinks[0];
}

function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
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

/** A bare kafkajs producer: the same records, batches of BATCH, IN_FLIGHT sendBatch calls at once. */
async function runBaseline(envelopes) {
  const topic = await newTopic('baseline');
  const kafka = new Kafka({ clientId: 'bench-baseline', brokers: env.KAFKA_BROKERS.split(','), logLevel: logLevel.NOTHING, retry: { retries: 0 } });
  const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner, allowAutoTopicCreation: false });
  await producer.connect();
  const latencies = new Float64Array(envelopes.length);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  let next = 0;
  async function worker() {
    while (next < envelopes.length) {
      const from = next;
      next = Math.min(envelopes.length, next + BATCH);
      const messages = [];
      for (let i = from; i < next; i++) {
        const e = envelopes[i];
        messages.push({
          key: e.key,
          value: JSON.stringify(envelopeJson(e)),
          timestamp: String(Date.parse(e.at)),
          headers: { id: e.id, channel: e.channel, source: e.source, op: e.op },
        });
      }
      await producer.sendBatch({ topicMessages: [{ topic, messages }], acks: -1 });
      const now = performance.now() - t0;
      for (let i = from; i < from + messages.length; i++) latencies[i] = now;
    }
  }
  await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  await producer.disconnect();
  latencies.sort();
  return {
    rate: envelopes.length / seconds,
    p50: percentile(latencies, 0.5),
    p99: percentile(latencies, 0.99),
    cpu: (cpu.user + cpu.system) / envelopes.length,
  };
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

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
    `run ${run}/${RUNS}: baseline ${Math.round(last('baseline').rate)}/s, sidekick ${Math.round(last('backlog').rate)}/s, live p99 ` +
      `${last('live').p99.toFixed(1)} ms\n`,
  );
}

const summary = Object.fromEntries(
  Object.entries(results).map(([k, rs]) => [
    k,
    {
      rate: median(rs.map((r) => r.rate)),
      p50: median(rs.map((r) => r.p50)),
      p99: median(rs.map((r) => r.p99)),
      cpu: median(rs.map((r) => r.cpu)),
    },
  ]),
);
const fmt = (n) => Math.round(n).toLocaleString('en-US');
const ms = (n) => `${n.toFixed(1)} ms`;
const us = (n) => `${n.toFixed(1)} µs`;
const base = summary.baseline.rate;
const lines = [
  `## Kafka sink — ${EVENTS.toLocaleString('en-US')}-event backlog, medians of ${RUNS} runs${quick ? ' (--quick)' : ''}`,
  '',
  `Broker: librdkafka mock cluster (in-memory, Kafka wire protocol, 1 broker, ${PARTITIONS} partitions; not a real Kafka). ` +
    `Node ${process.version}, kafkajs 2.2.4, acks=all, batches of ${BATCH}, ${IN_FLIGHT} requests in flight, ${KEYS.toLocaleString('en-US')} keys.`,
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
