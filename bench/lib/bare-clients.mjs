// Bare clients: each broker's / HTTP client library alone, with the same batching and in-flight
// count as the pg-sidekick sink it is compared with, but without per-key lanes, retries, per-item
// outcomes or the outbox. They are the ceiling any sink built on that library can reach. Each offers
// `deliver(envelope) → Promise` (resolves once the receiver answered / the broker acknowledged) and
// `close()`.
import { request as httpRequest } from 'node:http';
import amqp from 'amqplib';
import { Redis } from 'ioredis';
import { Kafka, logLevel, Partitioners } from 'kafkajs';
import { Agent } from 'undici';

/** Batches of `size`, at most `concurrency` of them in flight; `sendBatch(envelopes)` rejects on failure. */
export function batcher(sendBatch, { size, concurrency }) {
  let queue = [];
  let head = 0;
  let inFlight = 0;
  let scheduled = false;
  function pump() {
    scheduled = false;
    while (head < queue.length && inFlight < concurrency) {
      const batch = queue.slice(head, head + size);
      head += batch.length;
      if (head > 100_000) {
        queue = queue.slice(head);
        head = 0;
      }
      inFlight++;
      sendBatch(batch.map((b) => b.e))
        .then(
          () => {
            for (const b of batch) b.resolve();
          },
          (error) => {
            for (const b of batch) b.reject(error);
          },
        )
        .finally(() => {
          inFlight--;
          pump();
        });
    }
  }
  return (e) =>
    new Promise((resolve, reject) => {
      queue.push({ e, resolve, reject });
      if (!scheduled) {
        scheduled = true;
        setImmediate(pump);
      }
    });
}

/** undici alone: `concurrency` POSTs in flight on keep-alive connections. */
export function bareUndici(url, body, { concurrency }) {
  const { origin, pathname } = new URL(url);
  const agent = new Agent({ keepAliveTimeout: 30_000 });
  const send = async ([e]) => {
    const r = await agent.request({
      origin,
      path: pathname,
      method: 'POST',
      body: body(e),
      headers: { 'content-type': 'application/json', 'webhook-id': e.id },
    });
    await r.body.dump();
    if (r.statusCode >= 300) throw new Error(`HTTP ${r.statusCode}`);
  };
  return { name: `bare undici (${concurrency} in flight)`, deliver: batcher(send, { size: 1, concurrency }), close: () => agent.close() };
}

/** What skor does: one POST at a time, each on a new connection. */
export function sequentialHttp(url, body) {
  const { hostname, port, pathname } = new URL(url);
  let chain = Promise.resolve();
  const post = (e) =>
    new Promise((resolve, reject) => {
      const text = body(e);
      const req = httpRequest(
        {
          host: hostname,
          port,
          path: pathname,
          method: 'POST',
          agent: false,
          headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'webhook-id': e.id },
        },
        (res) => {
          res.resume();
          res.on('end', () => (res.statusCode < 300 ? resolve() : reject(new Error(`HTTP ${res.statusCode}`))));
        },
      );
      req.on('error', reject);
      req.end(text);
    });
  return {
    name: 'sequential, new connection per event (skor)',
    deliver: (e) => {
      chain = chain.then(() => post(e));
      return chain;
    },
    async close() {
      await chain.catch(() => {});
    },
  };
}

/** kafkajs alone: sendBatch of `size` records, `concurrency` at once, acks=all. */
export async function bareKafka(brokers, topic, body, { size, concurrency }) {
  const kafka = new Kafka({ clientId: 'bench-bare', brokers: brokers.split(','), logLevel: logLevel.NOTHING, retry: { retries: 0 } });
  const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner, allowAutoTopicCreation: false });
  await producer.connect();
  const send = (batch) =>
    producer.sendBatch({
      acks: -1,
      topicMessages: [
        {
          topic,
          messages: batch.map((e) => ({
            key: e.key ?? null,
            value: body(e),
            timestamp: String(Date.parse(e.at)),
            headers: { id: e.id, channel: e.channel, source: e.source, op: e.op ?? '' },
          })),
        },
      ],
    });
  return { name: 'bare kafkajs producer', deliver: batcher(send, { size, concurrency }), close: () => producer.disconnect() };
}

/** amqplib alone on a confirm channel: persistent, mandatory messages, confirmed per batch. */
export async function bareAmqp(url, exchange, body, { size, concurrency }) {
  const connection = await amqp.connect(url);
  const channel = await connection.createConfirmChannel();
  channel.setMaxListeners(0);
  const send = async (batch) => {
    const confirms = [];
    for (const e of batch) {
      let flowing = true;
      confirms.push(
        new Promise((resolve, reject) => {
          flowing = channel.publish(
            exchange,
            `${e.schema}.${e.table}.${e.op}`,
            Buffer.from(body(e)),
            {
              persistent: true,
              mandatory: true,
              messageId: e.id,
              contentType: 'application/json',
              appId: 'pg-sidekick',
              timestamp: Math.floor(Date.parse(e.at) / 1000),
              headers: { source: e.source, channel: e.channel, op: e.op, key: e.key },
            },
            (err) => (err ? reject(err) : resolve()),
          );
        }),
      );
      if (!flowing) await new Promise((resolve) => channel.once('drain', resolve));
    }
    await Promise.all(confirms);
  };
  return { name: 'bare amqplib, confirm channel', deliver: batcher(send, { size, concurrency }), close: () => connection.close() };
}

/** ioredis alone: pipelined XADD batches. */
export function bareRedis(url, stream, body, { size, concurrency }) {
  const client = new Redis(url);
  const send = async (batch) => {
    const p = client.pipeline();
    for (const e of batch) p.xadd(stream, '*', 'id', e.id, 'channel', e.channel, 'op', e.op ?? '', 'key', e.key ?? '', 'data', body(e));
    for (const [err] of await p.exec()) if (err) throw err;
  };
  return {
    name: 'bare ioredis, pipelined XADD',
    deliver: batcher(send, { size, concurrency }),
    close: async () => {
      client.disconnect();
    },
  };
}
