// Receivers: each records what one sink really delivered, in arrival order, as (key, version) pairs.
//   webhook  a real HTTP server in this process, whose answers a scenario scripts (500, 400, hang, kill)
//   redis    XRANGE on the stream (polled; entry ids make every read exact)
//   kafka    a kafkajs consumer in its own group, from the beginning (records deduplicated by partition+offset)
//   amqp     an amqplib consumer on a durable queue bound to the sink's exchange (broker redeliveries skipped)
import { createServer } from 'node:http';
import amqp from 'amqplib';
import { Redis } from 'ioredis';
import kafkajs from 'kafkajs';
import { sleep, waitFor } from './util.mjs';

/** (key, version, id) of one delivered body (the envelope JSON); undefined for something else. */
export function parseEvent(text) {
  let e;
  try {
    e = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (e?.new && typeof e.new.v === 'number') return { key: String(e.key), v: e.new.v, id: String(e.id), event: e };
  // A NOTIFY of the flood scenario: the payload says its own key and version.
  const p = typeof e?.payload === 'string' ? safeJson(e.payload) : e?.payload;
  if (p && typeof p.k === 'string' && typeof p.v === 'number') return { key: p.k, v: p.v, id: String(e.id), event: e };
  return undefined;
}

function safeJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** What one sink received, in arrival order. */
export function createLog(name) {
  const arrivals = [];
  const pairs = new Set();
  return {
    name,
    arrivals,
    add(parsed) {
      arrivals.push({ key: parsed.key, v: parsed.v, id: parsed.id });
      pairs.add(`${parsed.key}:${parsed.v}`);
    },
    has: (key, v) => pairs.has(`${key}:${v}`),
    async poll() {},
    async close() {},
  };
}

/**
 * The webhook receiver. `behave(parsed, attempt, body)` decides each answer: a status number,
 * 'hang' (never answer; the sink's timeout must give up), or 'destroy' (cut the connection).
 * Only 2xx answers count as delivered. `kill()` closes the server and every connection (the port
 * refuses); `revive()` listens again on the same port.
 */
export async function startWebhookReceiver(name = 'webhook') {
  const log = createLog(name);
  let behave = () => 204;
  let latency = () => 0;
  const attempts = new Map();
  const sockets = new Set();
  const hung = new Set();
  let requests = 0;
  const server = createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      requests++;
      const body = Buffer.concat(chunks).toString('utf8');
      const parsed = parseEvent(body);
      const id = req.headers['webhook-id'] ?? parsed?.id ?? '?';
      const attempt = (attempts.get(id) ?? 0) + 1;
      attempts.set(id, attempt);
      const answer = parsed ? behave(parsed, attempt, body) : 204;
      if (answer === 'hang') {
        hung.add(res);
        res.on('close', () => hung.delete(res));
        return;
      }
      if (answer === 'destroy') {
        req.socket.destroy();
        return;
      }
      const respond = () => {
        // A request the bridge gave up on (timeout, shutdown) while we were "working" was not delivered.
        if (res.destroyed || req.socket.destroyed) return;
        if (answer >= 200 && answer < 300 && parsed) log.add(parsed);
        res.writeHead(answer, { 'content-type': 'text/plain' }).end(answer >= 300 ? 'chaos says no' : '');
      };
      const delay = latency();
      if (delay > 0) setTimeout(respond, delay);
      else respond();
    });
  });
  server.keepAliveTimeout = 5_000;
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  let listening = true;
  const kill = async () => {
    if (!listening) return;
    listening = false;
    const closed = new Promise((resolve) => server.close(resolve));
    for (const s of sockets) s.destroy();
    await closed;
  };
  return {
    ...log,
    url: `http://127.0.0.1:${port}/hook`,
    /** Replaces the answering policy. */
    setBehaviour(fn) {
      behave = fn;
      // Requests left hanging are cut once the receiver stops hanging (the bridge gave up on them anyway).
      for (const res of hung) res.socket?.destroy();
    },
    /** How long each answer takes (ms), e.g. () => 20 + Math.random() * 60 for a remote receiver. */
    setLatency(fn) {
      latency = fn;
    },
    requests: () => requests,
    attempts,
    kill,
    async revive() {
      if (listening) return;
      await new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, '127.0.0.1', resolve);
      });
      listening = true;
    },
    close: kill,
  };
}

/** Follows a Redis stream with XRANGE from the last entry read; poll() reads what is new. */
export function redisStreamReader(url, stream, name = 'redis') {
  const log = createLog(name);
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => 100, enableOfflineQueue: true });
  client.on('error', () => {});
  let last = '-';
  let polling;
  const poll = async () => {
    for (;;) {
      const from = last === '-' ? '-' : `(${last}`;
      const rows = await client.xrange(stream, from, '+', 'COUNT', 5000);
      for (const [entryId, flat] of rows) {
        last = entryId;
        const i = flat.indexOf('data');
        const parsed = i >= 0 ? parseEvent(flat[i + 1]) : undefined;
        if (parsed) log.add(parsed);
      }
      if (rows.length < 5000) return;
    }
  };
  return {
    ...log,
    // One poll at a time; a failed poll (Redis down) just reads nothing new.
    async poll() {
      polling ??= poll()
        .catch(() => {})
        .finally(() => {
          polling = undefined;
        });
      await polling;
    },
    async close() {
      client.disconnect();
    },
  };
}

/** A kafkajs consumer in a fresh group reading `topic` from the beginning. */
export async function kafkaReader(brokers, topic, name = 'kafka') {
  const log = createLog(name);
  const seen = new Set();
  const kafka = new kafkajs.Kafka({
    clientId: 'chaos-reader',
    brokers: brokers.split(','),
    logLevel: kafkajs.logLevel.NOTHING,
    retry: { retries: 1000, initialRetryTime: 200, maxRetryTime: 2_000 },
  });
  const consumer = kafka.consumer({ groupId: `${topic}-reader`, sessionTimeout: 10_000, heartbeatInterval: 1_000, maxWaitTimeInMs: 200 });
  let joined = false;
  consumer.on(consumer.events.GROUP_JOIN, () => {
    joined = true;
  });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({
    eachMessage: async ({ partition, message }) => {
      const where = `${partition}:${message.offset}`;
      if (seen.has(where)) return;
      seen.add(where);
      const parsed = parseEvent(message.value?.toString('utf8') ?? '');
      if (parsed) log.add(parsed);
    },
  });
  await waitFor(() => joined, `the kafka reader to join its group on ${topic}`, 30_000, 50);
  return {
    ...log,
    async close() {
      await consumer.disconnect().catch(() => {});
    },
  };
}

/**
 * Declares `exchange` (topic, durable) and a durable queue bound to it with '#', and consumes it,
 * acknowledging each message after recording it; reconnects after a broker restart. A message the
 * broker delivers again (`redelivered`) whose id was recorded is the broker's repeat, not the sink's.
 */
export async function amqpReader(url, exchange, queue, name = 'amqp') {
  const log = createLog(name);
  const ids = new Set();
  let conn;
  let running = true;
  const open = async () => {
    conn = await amqp.connect(url);
    conn.on('error', () => {});
    const ch = await conn.createChannel();
    ch.on('error', () => {});
    await ch.assertExchange(exchange, 'topic', { durable: true });
    await ch.assertQueue(queue, { durable: true });
    await ch.bindQueue(queue, exchange, '#');
    await ch.prefetch(500);
    await ch.consume(queue, (msg) => {
      if (!msg) return;
      const parsed = parseEvent(msg.content.toString('utf8'));
      if (parsed && !(msg.fields.redelivered && ids.has(`${parsed.id}/${parsed.v}`))) {
        ids.add(`${parsed.id}/${parsed.v}`);
        log.add(parsed);
      }
      try {
        ch.ack(msg);
      } catch {
        /* channel gone: the broker redelivers, and the filter above skips it */
      }
    });
    const c = conn;
    return { closed: new Promise((resolve) => c.once('close', resolve)) };
  };
  // The first connection must work (a clear error otherwise); later ones are retried while running.
  let { closed } = await open();
  void (async () => {
    while (running) {
      await closed;
      while (running) {
        try {
          ({ closed } = await open());
          break;
        } catch {
          await sleep(500);
        }
      }
    }
  })();
  return {
    ...log,
    async close() {
      running = false;
      await conn?.close().catch(() => {});
    },
  };
}
