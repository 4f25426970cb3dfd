// Bare clients: each broker's / HTTP client library alone, with the same batching and in-flight
// count as the pg-sidekick sink it is compared with, but without per-key lanes, retries, per-item
// outcomes or the outbox. They are the ceiling any sink built on that library can reach. Each offers
// `deliver(envelope) → Promise` (resolves once the receiver answered / the broker acknowledged) and
// `close()`. The benchmarks' pass/fail targets are ratios against these, measured in the same run.
//
// Also here: `bareDrain`, node-postgres alone reading the outbox and deleting what it read (the floor
// of any drain). ./bare-listener.mjs is the LISTEN client that only counts (a script of its own: it
// runs as a separate process).
import { request as httpRequest } from 'node:http';
import amqp from 'amqplib';
import { Redis } from 'ioredis';
import { Kafka, logLevel, Partitioners } from 'kafkajs';
import pg from 'pg';
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

/**
 * amqplib alone on a confirm channel: persistent, mandatory messages with the sink's properties and
 * headers, confirmed per batch; it waits for 'drain' when amqplib's buffer is full, as the sink does.
 */
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
              headers: { source: e.source, channel: e.channel, op: e.op, schema: e.schema, table: e.table, key: e.key },
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

/**
 * The least any outbox drain must do, with node-postgres alone: read the waiting events in id order
 * from sidekick.events (at most `batchSize` events per read, the first row always, as the drain
 * fetches; node-postgres parses the row images) and delete the rows it read, one transaction per read
 * with synchronous_commit=off (as the drain's bookkeeping). No envelopes, no ledger, no routing, no
 * sink. Resolves with the number of events read (a chunk row holds up to 1000).
 */
export async function bareDrain(url, { batchSize = 1000 } = {}) {
  const client = new pg.Client({ connectionString: url, application_name: 'bench-bare-drain' });
  await client.connect();
  const fetch = `
    SELECT id, xid::text AS xid, at, source, channel, op, schema_name, table_name, key_columns, event_ids, new, old, keys, key, payload
    FROM (
      SELECT o.*, sum(coalesce(cardinality(o.event_ids), 1)) OVER w AS running, coalesce(cardinality(o.event_ids), 1) AS events
      FROM sidekick.events o
      WHERE o.id > $1
      WINDOW w AS (ORDER BY o.id ROWS UNBOUNDED PRECEDING)
      ORDER BY o.id
      LIMIT $2
    ) b
    WHERE b.running - b.events < $2
    ORDER BY id`;
  try {
    let events = 0;
    let after = '0';
    for (;;) {
      await client.query('BEGIN');
      await client.query('SET LOCAL synchronous_commit = off');
      const { rows } = await client.query(fetch, [after, batchSize]);
      if (rows.length === 0) {
        await client.query('COMMIT');
        return events;
      }
      const ids = rows.map((r) => r.id);
      for (const r of rows) events += r.event_ids?.length ?? 1;
      await client.query('DELETE FROM sidekick.outbox WHERE id = ANY ($1::bigint[])', [ids]);
      await client.query('DELETE FROM sidekick.row_changes WHERE id = ANY ($1::bigint[])', [ids]);
      await client.query('COMMIT');
      after = ids.at(-1);
    }
  } finally {
    await client.end();
  }
}
