import amqp, { type Channel, type ChannelModel, type ConsumeMessage } from 'amqplib';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { amqpSink } from '../../sinks/amqp/index.js';
import { amqpOptions, type AmqpOptions } from '../../sinks/amqp/options.js';
import { createDispatcher } from '../../src/dispatcher/index.js';
import { envelopeJson, notifyEnvelope } from '../../src/envelope.js';
import { FatalError, RetriableError, type SidekickError } from '../../src/errors.js';
import type { Sink } from '../../src/sink.js';
import { contractContext, quietLogger, sinkContract, testEnvelope } from '../contract/sink-contract.js';
import { waitFor } from '../support/db.js';
import { serviceEnv } from '../support/services.js';
import { amqpBridgeSuite } from './amqp-bridge.suite.js';
import { amqpRestartSuite } from './amqp-restart.suite.js';
import { closedPort, createTcpProxy, dispatchOptions, randomName, rowChanges, verifyDelivery, type Received } from './amqp-redis-helpers.js';

// Everything here runs against the real RabbitMQ started by scripts/services.sh; each test uses its
// own exchange and queues. The reading side is plain amqplib, independent of the sink.

const AMQP_URL = serviceEnv().AMQP_URL;
const schema = z.strictObject(amqpOptions);
const optionsFor = (over: Record<string, unknown>): AmqpOptions => schema.parse({ url: AMQP_URL, ...over });

/**
 * An independent reader: a queue bound to `exchange` with `bindings`, consumed by plain amqplib.
 * `drain()` returns what arrived since the last call once the queue is empty: a queue.declare on the
 * consuming channel is answered after the deliveries dispatched before it.
 */
interface Reader {
  readonly queue: string;
  drain(): Promise<ConsumeMessage[]>;
  close(): Promise<void>;
}

const admin: { connection?: ChannelModel; channel?: Channel } = {};
async function adminChannel(): Promise<Channel> {
  if (!admin.channel) {
    admin.connection = await amqp.connect(AMQP_URL);
    admin.connection.on('error', () => {});
    admin.channel = await admin.connection.createChannel();
    admin.channel.on('error', () => {});
  }
  return admin.channel;
}

async function createReader(
  exchange: string,
  bindings: string[],
  queueOptions: amqp.Options.AssertQueue = { autoDelete: false, durable: false },
): Promise<Reader> {
  const connection = await amqp.connect(AMQP_URL);
  connection.on('error', () => {});
  const channel = await connection.createChannel();
  channel.on('error', () => {});
  await channel.assertExchange(exchange, 'topic', { durable: true });
  const { queue } = await channel.assertQueue(randomName('sk-q'), queueOptions);
  for (const b of bindings) await channel.bindQueue(queue, exchange, b);
  let got: ConsumeMessage[] = [];
  await channel.consume(
    queue,
    (m) => {
      if (m) got.push(m);
    },
    { noAck: true },
  );
  return {
    queue,
    async drain() {
      await waitFor(async () => (await channel.checkQueue(queue)).messageCount === 0, `queue ${queue} to be consumed`, 20_000, 20);
      const out = got;
      got = [];
      return out;
    },
    async close() {
      await channel.deleteQueue(queue).catch(() => {});
      await channel.deleteExchange(exchange).catch(() => {});
      await connection.close().catch(() => {});
    },
  };
}

const readers: Reader[] = [];
const sinks: Sink[] = [];
afterEach(async () => {
  await Promise.all(sinks.splice(0).map((s) => s.stop().catch(() => {})));
  await Promise.all(readers.splice(0).map((r) => r.close()));
});
afterAll(async () => {
  await admin.connection?.close().catch(() => {});
});

function makeSink(over: Record<string, unknown>): Sink {
  const sink = amqpSink.create(optionsFor(over), contractContext('rabbit'));
  sinks.push(sink);
  return sink;
}

const ids = (messages: ConsumeMessage[]) => messages.map((m) => m.properties.messageId as string);
const signal = () => new AbortController().signal;

// ---- the shared contract ---------------------------------------------------------------------
{
  const exchange = randomName('sk-contract');
  let reader: Reader | undefined;
  const seen: string[] = [];
  sinkContract({
    name: 'amqp (real RabbitMQ)',
    async create() {
      reader ??= await createReader(exchange, ['#']);
      return amqpSink.create(optionsFor({ exchange }), contractContext('rabbit'));
    },
    async received() {
      seen.push(...ids(await reader!.drain()));
      return seen;
    },
    async createUnreachable() {
      return amqpSink.create(
        optionsFor({ url: `amqp://guest:guest@127.0.0.1:${await closedPort()}`, exchange, connectTimeout: 2_000 }),
        contractContext('rabbit'),
      );
    },
    async fatalCase() {
      // Only routing key "kept" is bound: the middle event comes back unroutable → fatal.
      const fx = randomName('sk-fatal');
      readers.push(await createReader(fx, ['kept']));
      const sink = amqpSink.create(optionsFor({ exchange: fx, routingKey: '{table}', unroutable: 'fatal' }), contractContext('rabbit'));
      const batch = [testEnvelope({ table: 'kept' }), testEnvelope({ table: 'nobody-listens' }), testEnvelope({ table: 'kept' })];
      return { sink, batch, fatal: [1] };
    },
  });
  afterAll(async () => {
    await reader?.close();
  });
}

// ---- what lands on the broker ----------------------------------------------------------------
describe('amqp sink against real RabbitMQ', () => {
  it('publishes the envelope with messageId, persistence, headers and the routing key template', async () => {
    const exchange = randomName('sk-x');
    const reader = await createReader(exchange, ['#']);
    readers.push(reader);
    const sink = makeSink({ exchange, routingKey: '{schema}.{table}.{op}', headers: { tenant: 'acme', op: 'spoofed' } });
    await sink.start(signal());
    const e = testEnvelope({ table: 'orders', key: '42', seq: '42' });
    expect(await sink.send([e], signal())).toEqual([{ ok: true }]);
    const [m] = await reader.drain();
    expect(m).toBeDefined();
    expect(m!.fields.routingKey).toBe('public.orders.INSERT');
    expect(m!.fields.exchange).toBe(exchange);
    expect(m!.properties).toMatchObject({
      messageId: e.id,
      deliveryMode: 2,
      contentType: 'application/json',
      appId: 'pg-sidekick',
      timestamp: Math.floor(Date.parse(e.at) / 1000),
    });
    expect(m!.properties.headers).toEqual({
      tenant: 'acme',
      source: 'table',
      channel: 'public.contract',
      seq: '42',
      op: 'INSERT',
      schema: 'public',
      table: 'orders',
      key: '42',
    });
    expect(JSON.parse(m!.content.toString('utf8'))).toEqual(envelopeJson(e));
  });

  it('NOTIFY events: {op} is NOTIFY, payload format sends the payload verbatim, cloudevents is structured JSON', async () => {
    const exchange = randomName('sk-x');
    const reader = await createReader(exchange, ['#']);
    readers.push(reader);
    const n = notifyEnvelope('orders', 'not json ✓', 7);
    const payload = makeSink({ exchange, format: 'payload', persistent: false });
    await payload.start(signal());
    expect(await payload.send([n, notifyEnvelope('orders', '{"a": 1}', 7)], signal())).toEqual([{ ok: true }, { ok: true }]);
    const ce = makeSink({ exchange, format: 'cloudevents' });
    await ce.start(signal());
    expect(await ce.send([n], signal())).toEqual([{ ok: true }]);
    const [text, json, event] = await reader.drain();
    expect(text!.fields.routingKey).toBe('orders.NOTIFY');
    expect(text!.content.toString('utf8')).toBe('not json ✓');
    expect(text!.properties.contentType).toBe('text/plain; charset=utf-8');
    expect(text!.properties.deliveryMode).toBe(1);
    expect(json!.content.toString('utf8')).toBe('{"a": 1}');
    expect(json!.properties.contentType).toBe('application/json');
    expect(event!.properties.contentType).toBe('application/cloudevents+json; charset=utf-8');
    // The one CloudEvents mapping (docs/cloudevents.md): a text payload is text/plain data.
    expect(JSON.parse(event!.content.toString('utf8'))).toEqual({
      specversion: '1.0',
      id: n.id,
      source: '/pg-sidekick/orders',
      type: 'pg-sidekick.notify',
      time: n.at,
      datacontenttype: 'text/plain',
      data: 'not json ✓',
    });
  });

  it('the default exchange ("") routes straight to the queue named by the routing key', async () => {
    const ch = await adminChannel();
    const { queue } = await ch.assertQueue(randomName('sk-direct'), { autoDelete: false });
    try {
      const sink = makeSink({ exchange: '', routingKey: queue });
      await sink.start(signal());
      const e = testEnvelope();
      expect(await sink.send([e], signal())).toEqual([{ ok: true }]);
      const m = await ch.get(queue, { noAck: true });
      expect(m ? m.properties.messageId : m).toBe(e.id);
    } finally {
      await ch.deleteQueue(queue);
    }
  });

  it('unroutable messages are retriable by default (e.g. the consumer has not bound its queue yet)', async () => {
    const exchange = randomName('sk-x');
    readers.push(await createReader(exchange, ['bound']));
    const sink = makeSink({ exchange, routingKey: '{table}' });
    await sink.start(signal());
    const [ok, lost] = await sink.send([testEnvelope({ table: 'bound' }), testEnvelope({ table: 'unbound' })], signal());
    expect(ok).toEqual({ ok: true });
    expect(lost!.ok).toBe(false);
    const error = (lost as { error: SidekickError }).error;
    expect(error).toBeInstanceOf(RetriableError);
    expect(error.code).toBe('AMQP_UNROUTABLE');
    expect(error.message).toMatch(/routing key "unbound"/);
  });

  it('mandatory: false lets an unroutable message be dropped by the broker, as plain AMQP does', async () => {
    const exchange = randomName('sk-x');
    readers.push(await createReader(exchange, ['bound']));
    const sink = makeSink({ exchange, routingKey: '{table}', mandatory: false });
    await sink.start(signal());
    expect(await sink.send([testEnvelope({ table: 'unbound' })], signal())).toEqual([{ ok: true }]);
  });

  it('a basic.nack from the broker (queue full, reject-publish) is a retriable failure of that item only', async () => {
    const exchange = randomName('sk-x');
    const ch = await adminChannel();
    await ch.assertExchange(exchange, 'topic', { durable: true });
    // No consumer: the queue holds two messages, then the broker refuses (nacks) publishes.
    const { queue } = await ch.assertQueue(randomName('sk-full'), { arguments: { 'x-max-length': 2, 'x-overflow': 'reject-publish' } });
    await ch.bindQueue(queue, exchange, '#');
    try {
      const sink = makeSink({ exchange });
      await sink.start(signal());
      const batch = [testEnvelope(), testEnvelope(), testEnvelope()];
      const result = await sink.send(batch, signal());
      expect(result.slice(0, 2)).toEqual([{ ok: true }, { ok: true }]);
      expect(result[2]!.ok).toBe(false);
      expect((result[2] as { error: SidekickError }).error).toMatchObject({ code: 'AMQP_NACK', retriable: true });
      const first = await ch.get(queue, { noAck: true });
      expect(first ? first.properties.messageId : first).toBe(batch[0]!.id);
    } finally {
      await ch.deleteQueue(queue);
      await ch.deleteExchange(exchange);
    }
  });

  it('declare: false checks that the exchange exists; a missing one keeps the sink unavailable with a clear error', async () => {
    const missing = randomName('sk-missing');
    const sink = makeSink({ exchange: missing, declare: false });
    const error = await sink.start(signal()).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(RetriableError);
    expect(error).toMatchObject({ code: 'AMQP_NOT_FOUND', unavailable: true });
    expect((error as Error).message).toContain(`exchange "${missing}" does not exist (declare: false)`);
    await expect(sink.check!(signal())).rejects.toThrow(/does not exist/);
    // Once someone creates it, the same sink works.
    const reader = await createReader(missing, ['#']);
    readers.push(reader);
    await sink.start(signal());
    expect(await sink.check!(signal())).toMatch(new RegExp(`exchange "${missing}" \\(RabbitMQ`));
    const e = testEnvelope();
    expect(await sink.send([e], signal())).toEqual([{ ok: true }]);
    expect(ids(await reader.drain())).toEqual([e.id]);
  });

  it('an exchange declared with another type is a clear start error (PRECONDITION_FAILED)', async () => {
    const exchange = randomName('sk-x');
    const ch = await adminChannel();
    await ch.assertExchange(exchange, 'fanout', { durable: true });
    try {
      const sink = makeSink({ exchange, exchangeType: 'topic' });
      await expect(sink.start(signal())).rejects.toMatchObject({ code: 'AMQP_PRECONDITION_FAILED' });
    } finally {
      await ch.deleteExchange(exchange);
    }
  });

  it('check() reports the broker and never logs or returns the password', async () => {
    const sink = makeSink({ exchange: randomName('sk-x') });
    const detail = await sink.check!(signal());
    expect(detail).toMatch(/amqp:\/\/guest:\[redacted\]@127\.0\.0\.1:\d+/);
    expect(detail).toMatch(/declared \(topic, durable\) on start/);
    expect(detail).not.toContain('guest@');
  });

  it('a lost connection fails the in-flight batch as retriable + unavailable, and the next send reconnects', async () => {
    const target = new URL(AMQP_URL);
    const proxy = await createTcpProxy({ host: target.hostname, port: Number(target.port) });
    try {
      const exchange = randomName('sk-x');
      const reader = await createReader(exchange, ['#']);
      readers.push(reader);
      const sink = makeSink({ exchange, url: `amqp://guest:guest@127.0.0.1:${proxy.port}` });
      await sink.start(signal());
      const first = testEnvelope();
      expect(await sink.send([first], signal())).toEqual([{ ok: true }]);

      // Cut the network while a large batch waits for its confirms.
      const batch = Array.from({ length: 2000 }, () => testEnvelope({ new: { pad: 'x'.repeat(2000) } }));
      const pending = sink.send(batch, signal());
      setImmediate(() => proxy.cut());
      const result = await pending;
      const failed = result.filter((o) => !o.ok) as { ok: false; error: SidekickError }[];
      expect(failed.length).toBeGreaterThan(0);
      for (const f of failed) expect(f.error).toMatchObject({ retriable: true, unavailable: true });

      // While the broker "is down", a send fails fast and retriably.
      proxy.refuse(true);
      const down = await sink.send([testEnvelope()], signal()).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(down).toMatchObject({ retriable: true, unavailable: true });
      proxy.refuse(false);

      const after = testEnvelope();
      expect(await sink.send([after], signal())).toEqual([{ ok: true }]);
      const got = ids(await reader.drain());
      expect(got).toContain(first.id);
      expect(got).toContain(after.id);
    } finally {
      await proxy.close();
    }
  });

  it('respects flow control: a batch larger than the channel buffer still gets one outcome per item', async () => {
    const exchange = randomName('sk-x');
    const reader = await createReader(exchange, ['#']);
    readers.push(reader);
    const sink = makeSink({ exchange });
    await sink.start(signal());
    const batch = Array.from({ length: 5000 }, () => testEnvelope());
    const result = await sink.send(batch, signal());
    expect(result.filter((o) => o.ok)).toHaveLength(5000);
    expect(ids(await reader.drain())).toEqual(batch.map((e) => e.id));
  });

  it('an item amqplib cannot encode (headers table over 64 KiB) fails fatally, the others are delivered', async () => {
    const exchange = randomName('sk-x');
    const reader = await createReader(exchange, ['#']);
    readers.push(reader);
    const sink = makeSink({ exchange });
    await sink.start(signal());
    const batch = [testEnvelope(), testEnvelope({ key: 'k'.repeat(70_000) }), testEnvelope()];
    const result = await sink.send(batch, signal());
    expect(result[0]).toEqual({ ok: true });
    expect(result[1]!.ok).toBe(false);
    expect((result[1] as { error: SidekickError }).error).toBeInstanceOf(FatalError);
    expect(result[2]).toEqual({ ok: true });
    expect(ids(await reader.drain())).toEqual([batch[0]!.id, batch[2]!.id]);
  });
});

// ---- volume through the real dispatcher --------------------------------------------------------
describe('amqp sink: 10 000 row changes through the dispatcher', () => {
  it('delivers every event once confirmed, per-key order kept, read back by an independent consumer', async () => {
    const exchange = randomName('sk-volume');
    const reader = await createReader(exchange, ['public.items.*']);
    readers.push(reader);
    const sink = makeSink({ exchange, routingKey: '{schema}.{table}.{op}' });
    await sink.start(signal());
    const dispatcher = createDispatcher({ sink, options: dispatchOptions(), logger: quietLogger });
    const sent = rowChanges(10_000, 200);
    const results = await Promise.all(sent.map((e) => dispatcher.deliver(e)));
    await dispatcher.stop(1_000);
    expect(results.filter((r) => r.status !== 'delivered')).toEqual([]);
    const received = await readBack(reader, 10_000);
    const report = verifyDelivery(sent, received);
    expect(report.problems).toEqual([]);
    expect(report.distinct).toBe(10_000);
  });
});

async function readBack(reader: Reader, expected: number, timeoutMs = 20_000): Promise<Received[]> {
  const received: Received[] = [];
  await waitFor(
    async () => {
      for (const m of await reader.drain()) received.push(toReceived(m));
      return new Set(received.map((r) => r.id)).size >= expected;
    },
    `${expected} messages in ${reader.queue}`,
    timeoutMs,
    50,
  ).catch(() => undefined);
  return received;
}

function toReceived(m: ConsumeMessage): Received {
  const body = JSON.parse(m.content.toString('utf8')) as { id: string; key: string; new: { seq: number } };
  return { id: body.id, key: body.key, seq: body.new.seq };
}

// Last, in this file's sequence: end to end through a bridge, then RabbitMQ restarted mid-stream.
amqpBridgeSuite();
amqpRestartSuite();
