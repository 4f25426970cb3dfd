#!/usr/bin/env node
// Webhook sink benchmark: events/s and latency from a backlog and at a steady rate, to a local
// receiver that answers 204 at once and to one that takes 20 ms per request. Baselines measured in
// the same run: a sequential client (one request at a time on a fresh connection, what skor does)
// and a bare undici client at the same concurrency (the ceiling for any undici-based sink).
//
//   npm run build && node bench/webhook.mjs [--quick] [--runs N] [--source memory]
//
// The receiver runs in a child process (its own event loop, like a real endpoint). Latency is
// measured from the moment an event is handed to the source until the receiver has read the
// request, on one wall clock shared by both processes (performance.timeOrigin + performance.now()).
//
// Sources are pluggable: `memory` (now) hands envelopes straight to the dispatcher. A source that
// inserts rows into the outbox (commit → receipt) plugs in as another entry of SOURCES.
//
// No pass/fail target here: every figure is informational, with its ratios to the sequential client
// and to bare undici of the same run. The webhook's targets are in bench/rows.mjs (row changes through
// the outbox, as a ratio to bare undici measured in that run). Baselines: bench/lib/bare-clients.mjs;
// medians and percentiles: bench/lib/stats.mjs.
import { fork } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { dirname, join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { bareUndici, sequentialHttp } from './lib/bare-clients.mjs';
import { clock, fmt, medianOf, percentile } from './lib/stats.mjs';

const here = dirname(fileURLToPath(import.meta.url));

// ---- receiver (child process) -------------------------------------------------------------------
if (process.argv[2] === '--receiver') {
  const delayMs = Number(process.argv[3] ?? 0);
  let ids = [];
  let times = [];
  const server = createServer((req, res) => {
    req.on('data', () => {});
    req.on('end', () => {
      ids.push(req.headers['webhook-id']);
      times.push(clock());
      if (delayMs > 0)
        setTimeout(() => {
          res.writeHead(204);
          res.end();
        }, delayMs);
      else {
        res.writeHead(204);
        res.end();
      }
    });
  });
  server.keepAliveTimeout = 60_000;
  server.listen(0, '127.0.0.1', () => process.send({ port: server.address().port }));
  process.on('disconnect', () => process.exit(0)); // the benchmark ended or was killed
  process.on('message', (m) => {
    if (m === 'collect') {
      process.send({ ids, times });
      ids = [];
      times = [];
    } else if (m === 'exit') {
      server.close();
      process.exit(0);
    }
  });
}

function startReceiver(delayMs) {
  const child = fork(fileURLToPath(import.meta.url), ['--receiver', String(delayMs)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  return new Promise((resolve) => {
    child.once('message', ({ port }) =>
      resolve({
        url: `http://127.0.0.1:${port}`,
        port,
        collect: () =>
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

// ---- helpers --------------------------------------------------------------------------------------
function parseArgs(argv) {
  const args = { quick: false, runs: 3, source: 'memory' };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--quick') args.quick = true;
    else if (argv[i] === '--runs') args.runs = Number(argv[++i]);
    else if (argv[i] === '--source') args.source = argv[++i];
    else throw new Error(`unknown argument ${argv[i]} (use --quick, --runs N, --source memory)`);
  }
  if (!(args.runs >= 1)) throw new Error('--runs must be ≥ 1');
  return args;
}

let seq = 0;
function envelopes(n) {
  const at = new Date().toISOString();
  return Array.from({ length: n }, (_, i) => ({
    id: `b${process.pid}-${++seq}`,
    source: 'table',
    channel: 'public.orders',
    op: 'INSERT',
    schema: 'public',
    table: 'orders',
    // Many keys (so events can flow concurrently), several events per key (so order is exercised).
    key: String(i % 4096),
    new: { id: i, customer: 'c-42', total: 123.45, status: 'new' },
    old: null,
    at,
    txid: '1000',
  }));
}

/** Latency of each event: receipt (receiver clock) minus hand-over (our clock), same wall clock. */
function latencies(sentAt, received) {
  const out = [];
  for (let i = 0; i < received.ids.length; i++) {
    const t0 = sentAt.get(received.ids[i]);
    if (t0 !== undefined) out.push(received.times[i] - t0);
  }
  return out.sort((a, b) => a - b);
}

// ---- clients ------------------------------------------------------------------------------------
/** pg-sidekick: the webhook sink behind the real dispatcher (per-key lanes, retries, backoff). */
async function sidekickClient(receiverUrl, concurrency) {
  const { webhookSink } = await import(join(here, '../dist/sinks/webhook/index.js'));
  const { webhookOptions } = await import(join(here, '../dist/sinks/webhook/options.js'));
  const { createDispatcher } = await import(join(here, '../dist/src/dispatcher/index.js'));
  const { createLogger } = await import(join(here, '../dist/src/logger.js'));
  const { z } = await import('zod');
  const logger = createLogger({ level: 'warn', destination: new Writable({ write: (_c, _e, cb) => cb() }) });
  const options = z
    .strictObject(webhookOptions)
    .parse({ url: `${receiverUrl}/hooks/{schema}/{table}`, secret: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw' });
  const sink = webhookSink.create(options, { name: 'bench', logger, database: {} });
  await sink.start(new AbortController().signal);
  const dispatcher = createDispatcher({
    sink,
    logger,
    options: { retry: { attempts: 10, initialDelay: 500, maxDelay: 300_000 }, concurrency, batch: { size: 1, linger: 0 }, maxQueued: 10_000_000 },
  });
  return {
    name: `pg-sidekick (${concurrency} in flight, signed)`,
    deliver: (e) =>
      dispatcher.deliver(e).then((d) => {
        if (d.status !== 'delivered') throw new Error(`not delivered: ${d.status}`);
      }),
    async close() {
      await dispatcher.stop(1000);
      await sink.stop();
    },
  };
}

/** The baselines (bench/lib/bare-clients.mjs), posting the envelope as JSON to the receiver's fixed path. */
const json = (e) => JSON.stringify(e);
/** Bare undici at the same concurrency: no retries, no ordering, no signature. */
const undiciClient = async (receiverUrl, concurrency) => bareUndici(`${receiverUrl}/hooks/public/orders`, json, { concurrency });
/** What skor does: one POST at a time, each on a new connection. */
const sequentialClient = async (receiverUrl) => sequentialHttp(`${receiverUrl}/hooks/public/orders`, json);

// ---- sources ------------------------------------------------------------------------------------
const SOURCES = {
  /** Envelopes built in memory and handed to the client directly (no database in the loop). */
  memory: {
    describe: 'envelopes handed to the dispatcher from memory (enqueue → receipt)',
    /** Everything at once: a backlog to drain. */
    async backlog(client, n) {
      const batch = envelopes(n);
      const sentAt = new Map();
      const t0 = clock();
      const all = batch.map((e) => {
        sentAt.set(e.id, clock());
        return client.deliver(e);
      });
      await Promise.all(all);
      return { seconds: (clock() - t0) / 1000, sentAt };
    },
    /** A steady rate: `rate` events/s for `seconds`. */
    async steady(client, rate, seconds) {
      const n = Math.round(rate * seconds);
      const batch = envelopes(n);
      const sentAt = new Map();
      const pending = [];
      const t0 = clock();
      let i = 0;
      await new Promise((resolve) => {
        const tick = () => {
          const due = Math.min(n, Math.floor(((clock() - t0) / 1000) * rate));
          for (; i < due; i++) {
            sentAt.set(batch[i].id, clock());
            pending.push(client.deliver(batch[i]));
          }
          if (i >= n) resolve();
          else setTimeout(tick, 1);
        };
        tick();
      });
      await Promise.all(pending);
      return { seconds: (clock() - t0) / 1000, sentAt };
    },
  },
};

// ---- main ---------------------------------------------------------------------------------------
async function main() {
  const args = parseArgs(process.argv.slice(2));
  const source = SOURCES[args.source];
  if (!source) throw new Error(`unknown source ${args.source} (known: ${Object.keys(SOURCES).join(', ')})`);
  const q = args.quick;
  const C = 32;
  const scenarios = [
    {
      name: 'backlog → instant receiver (204)',
      delay: 0,
      kind: 'backlog',
      clients: [
        { make: (u) => sidekickClient(u, C), n: q ? 5_000 : 200_000 },
        { make: (u) => undiciClient(u, C), n: q ? 5_000 : 200_000 },
        { make: (u) => sequentialClient(u), n: q ? 1_000 : 20_000 },
      ],
    },
    {
      name: 'backlog → 20 ms receiver',
      delay: 20,
      kind: 'backlog',
      clients: [
        { make: (u) => sidekickClient(u, C), n: q ? 640 : 8_000 },
        { make: (u) => undiciClient(u, C), n: q ? 640 : 8_000 },
        { make: (u) => sequentialClient(u), n: q ? 40 : 200 },
      ],
    },
    {
      name: 'steady 2 000 events/s → instant receiver',
      delay: 0,
      kind: 'steady',
      rate: 2_000,
      seconds: q ? 1 : 5,
      clients: [{ make: (u) => sidekickClient(u, C) }, { make: (u) => undiciClient(u, C) }],
    },
  ];

  const rows = [];
  for (const scenario of scenarios) {
    const receiver = await startReceiver(scenario.delay);
    // Warm up the receiver and every client's code paths (JIT, connections); not measured.
    for (const spec of scenario.clients) {
      const client = await spec.make(receiver.url);
      await source.backlog(client, scenario.delay > 0 ? 64 : (spec.n ?? 2_000) >= 20_000 ? 5_000 : 500);
      await client.close();
    }
    await receiver.collect();
    const results = scenario.clients.map(() => ({ name: '', runs: [] }));
    // Interleaved: run r of every client, then run r + 1, so that drift in the machine's load
    // spreads over all clients instead of favouring the one measured last.
    for (let r = 0; r < args.runs; r++) {
      for (const [c, spec] of scenario.clients.entries()) {
        const client = await spec.make(receiver.url);
        results[c].name = client.name;
        const result =
          scenario.kind === 'backlog' ? await source.backlog(client, spec.n) : await source.steady(client, scenario.rate, scenario.seconds);
        await client.close();
        const received = await receiver.collect();
        const lat = latencies(result.sentAt, received);
        if (lat.length !== result.sentAt.size) throw new Error(`${client.name}: receiver saw ${lat.length} of ${result.sentAt.size} events`);
        const run = { eps: result.sentAt.size / result.seconds, p50: percentile(lat, 0.5), p99: percentile(lat, 0.99), n: result.sentAt.size };
        results[c].runs.push(run);
        process.stderr.write(
          `  ${scenario.name} · ${client.name} · run ${r + 1}: ${fmt(run.eps)} ev/s, p50 ${fmt(run.p50, 1)} ms, p99 ${fmt(run.p99, 1)} ms\n`,
        );
      }
    }
    await receiver.stop();
    const perClient = results.map(({ name, runs }) => ({
      name,
      n: runs[0].n,
      eps: medianOf(runs, 'eps'),
      p50: medianOf(runs, 'p50'),
      p99: medianOf(runs, 'p99'),
    }));
    const sequential = perClient.find((c) => c.name.startsWith('sequential'));
    const bare = perClient.find((c) => c.name.startsWith('bare undici'));
    for (const c of perClient) {
      rows.push({
        scenario: scenario.name,
        ...c,
        vsSequential: sequential ? c.eps / sequential.eps : undefined,
        vsUndici: bare ? c.eps / bare.eps : undefined,
      });
    }
  }

  const lines = [
    `# Webhook sink benchmark${q ? ' (--quick)' : ''}`,
    '',
    `Source: ${args.source} — ${source.describe}. Medians of ${args.runs} runs; receiver in a child process on 127.0.0.1.`,
    `Node ${process.version}, ${new Date().toISOString().slice(0, 10)}.`,
    '',
    '| scenario | client | events | events/s | p50 ms | p99 ms | × sequential | × bare undici |',
    '|---|---|---:|---:|---:|---:|---:|---:|',
    ...rows.map(
      (r) =>
        `| ${r.scenario} | ${r.name} | ${fmt(r.n)} | ${fmt(r.eps)} | ${fmt(r.p50, 1)} | ${fmt(r.p99, 1)} | ` +
        `${r.vsSequential ? `${fmt(r.vsSequential, 1)}×` : '—'} | ${r.vsUndici ? `${fmt(r.vsUndici, 2)}×` : '—'} |`,
    ),
    '',
    'Latency in the backlog rows includes the time an event waited behind the rest of the backlog; the steady-rate rows show delivery latency proper.',
    '',
  ];
  const table = lines.join('\n');
  process.stdout.write(table);
  mkdirSync(join(here, 'results'), { recursive: true });
  writeFileSync(join(here, 'results', 'webhook.md'), table);
}

if (process.argv[2] !== '--receiver') await main();
