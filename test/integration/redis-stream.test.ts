import { Redis } from 'ioredis';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { redisStreamSink } from '../../sinks/redis-stream/index.js';
import { redisStreamOptions, type RedisStreamOptions } from '../../sinks/redis-stream/options.js';
import { createDispatcher } from '../../src/dispatcher/index.js';
import { envelopeJson, notifyEnvelope } from '../../src/envelope.js';
import { FatalError, RetriableError, type SidekickError } from '../../src/errors.js';
import type { Sink } from '../../src/sink.js';
import { contractContext, quietLogger, sinkContract, testEnvelope } from '../contract/sink-contract.js';
import { serviceEnv } from '../support/services.js';
import { redisBridgeSuite } from './redis-bridge.suite.js';
import { redisRestartSuite } from './redis-restart.suite.js';
import { closedPort, createTcpProxy, dispatchOptions, randomName, rowChanges, verifyDelivery, type Received } from './amqp-redis-helpers.js';

// Against the real Redis started by scripts/services.sh; every test uses its own stream keys, and
// reads them back with a separate plain ioredis client (XRANGE), independent of the sink.

const REDIS_URL = serviceEnv().REDIS_URL;
const schema = z.strictObject(redisStreamOptions);
const optionsFor = (over: Record<string, unknown>): RedisStreamOptions => schema.parse({ url: REDIS_URL, ...over });

const reader = new Redis(REDIS_URL, { lazyConnect: true });
// The restart suite (last in this file) takes Redis away for a moment; this client just reconnects.
reader.on('error', () => {});
const keys: string[] = [];
const sinks: Sink[] = [];
afterEach(async () => {
  await Promise.all(sinks.splice(0).map((s) => s.stop().catch(() => {})));
  if (keys.length > 0) await reader.del(...keys.splice(0));
});
afterAll(async () => {
  reader.disconnect();
});

/** A fresh stream-key prefix for one test (deleted afterwards). */
function prefix(): string {
  const p = randomName('sk');
  return p;
}

function makeSink(over: Record<string, unknown>): Sink {
  const sink = redisStreamSink.create(optionsFor(over), contractContext('redis'));
  sinks.push(sink);
  return sink;
}

/** XRANGE of a whole stream as field objects. */
async function entries(key: string): Promise<{ streamId: string; fields: Record<string, string> }[]> {
  keys.push(key);
  const rows = await reader.xrange(key, '-', '+');
  return rows.map(([streamId, flat]) => {
    const fields: Record<string, string> = {};
    for (let i = 0; i < flat.length; i += 2) fields[flat[i] as string] = flat[i + 1] as string;
    return { streamId, fields };
  });
}

const signal = () => new AbortController().signal;

// ---- the shared contract ---------------------------------------------------------------------
{
  const p = prefix();
  sinkContract({
    name: 'redis-stream (real Redis)',
    create: () => redisStreamSink.create(optionsFor({ stream: `${p}:{table}` }), contractContext('redis')),
    async received() {
      return (await entries(`${p}:contract`)).map((e) => e.fields.id as string);
    },
    createUnreachable: async () => redisStreamSink.create(optionsFor({ url: `redis://127.0.0.1:${await closedPort()}` }), contractContext('redis')),
    async fatalCase() {
      // A key holding a plain string: XADD answers WRONGTYPE for that item only.
      const fp = prefix();
      await reader.set(`${fp}:taken`, 'a string');
      keys.push(`${fp}:taken`, `${fp}:free`);
      const sink = redisStreamSink.create(optionsFor({ stream: `${fp}:{table}` }), contractContext('redis'));
      return { sink, batch: [testEnvelope({ table: 'free' }), testEnvelope({ table: 'taken' }), testEnvelope({ table: 'free' })], fatal: [1] };
    },
  });
}

describe('redis-stream sink against real Redis', () => {
  it('writes id, seq, channel, source, op, key and data fields; data is the envelope JSON', async () => {
    const p = prefix();
    const sink = makeSink({ stream: `${p}:{schema}.{table}` });
    await sink.start(signal());
    const e = testEnvelope({ table: 'orders', key: '42', seq: '42' });
    expect(await sink.send([e], signal())).toEqual([{ ok: true }]);
    const [entry] = await entries(`${p}:public.orders`);
    expect(entry!.streamId).toMatch(/^\d+-\d+$/);
    expect(Object.keys(entry!.fields)).toEqual(['id', 'seq', 'channel', 'source', 'op', 'key', 'data']);
    expect(entry!.fields).toMatchObject({ id: e.id, seq: '42', channel: 'public.contract', source: 'table', op: 'INSERT', key: '42' });
    expect(JSON.parse(entry!.fields.data!)).toEqual(envelopeJson(e));
  });

  it('NOTIFY events: default stream pg:{channel}, no op or key field; payload format keeps the text', async () => {
    const channel = randomName('chan');
    const sink = makeSink({ format: 'payload' });
    await sink.start(signal());
    const n = notifyEnvelope(channel, 'plain ✓ text', 1);
    expect(await sink.send([n], signal())).toEqual([{ ok: true }]);
    const [entry] = await entries(`pg:${channel}`);
    expect(entry!.fields).toEqual({ id: n.id, channel, source: 'notify', data: 'plain ✓ text' });
  });

  it('a stream template an event cannot fill fails that event alone (TEMPLATE_FIELD_MISSING); the rest of the batch lands', async () => {
    const p = prefix();
    const sink = makeSink({ stream: `${p}:{schema}.{table}` });
    await sink.start(signal());
    const [a, b] = [testEnvelope({ key: 'a' }), testEnvelope({ key: 'b' })];
    const result = await sink.send([a, notifyEnvelope('jobs', 'x', 1), b], signal());
    expect(result).toMatchObject([{ ok: true }, { ok: false, error: { code: 'TEMPLATE_FIELD_MISSING', retriable: false } }, { ok: true }]);
    expect((await entries(`${p}:public.contract`)).map((e) => e.fields.id)).toEqual([a.id, b.id]);
  });

  it('payload format for a row change is the row image (new; old for DELETE)', async () => {
    const p = prefix();
    const sink = makeSink({ stream: `${p}`, format: 'payload' });
    await sink.start(signal());
    const ins = testEnvelope({ new: { id: 1 }, old: null });
    const del = testEnvelope({ op: 'DELETE', new: null, old: { id: 1 } });
    await sink.send([ins, del], signal());
    const got = await entries(p);
    expect(got.map((e) => JSON.parse(e.fields.data!))).toEqual([{ id: 1 }, { id: 1 }]);
    expect(got.map((e) => e.fields.op)).toEqual(['INSERT', 'DELETE']);
  });

  it('maxLen trims each stream approximately (XADD MAXLEN ~)', async () => {
    const p = prefix();
    const sink = makeSink({ stream: p, maxLen: 100 });
    await sink.start(signal());
    for (let i = 0; i < 10; i++)
      await sink.send(
        Array.from({ length: 500 }, () => testEnvelope()),
        signal(),
      );
    keys.push(p);
    const length = await reader.xlen(p);
    // "~" trims whole radix-tree nodes (100 entries by default): never below 100, far below 5000.
    expect(length).toBeGreaterThanOrEqual(100);
    expect(length).toBeLessThan(400);
  });

  it('per-item outcomes: WRONGTYPE is fatal for that item only; the rest of the pipeline lands', async () => {
    const p = prefix();
    await reader.set(`${p}:taken`, 'x');
    keys.push(`${p}:taken`);
    const sink = makeSink({ stream: `${p}:{table}` });
    await sink.start(signal());
    const batch = [testEnvelope({ table: 'a' }), testEnvelope({ table: 'taken' }), testEnvelope({ table: 'a' })];
    const result = await sink.send(batch, signal());
    expect(result[0]).toEqual({ ok: true });
    expect((result[1] as { error: SidekickError }).error).toBeInstanceOf(FatalError);
    expect((result[1] as { error: SidekickError }).error.code).toBe('REDIS_WRONGTYPE');
    expect(result[2]).toEqual({ ok: true });
    expect((await entries(`${p}:a`)).map((e) => e.fields.id)).toEqual([batch[0]!.id, batch[2]!.id]);
  });

  it('rejects ioredis options that would hide failures (offline queue, resend)', () => {
    expect(() => schema.parse({ url: REDIS_URL, options: { enableOfflineQueue: true } })).toThrow(/enableOfflineQueue.*set by pg-sidekick/s);
    expect(() => redisStreamSink.create(schema.parse({}), contractContext('redis'))).toThrow(/give url, options.sentinels/);
  });

  it('check() names the server and version without the password', async () => {
    const u = new URL(REDIS_URL);
    const sink = makeSink({ url: `redis://default:hunter2@${u.host}` });
    // The server has no password: AUTH with one fails, and the error must not leak it either.
    const error = await sink.check!(signal()).then(
      () => undefined,
      (e: Error) => e,
    );
    if (error) expect(error.message).not.toContain('hunter2');
    const plain = makeSink({});
    expect(await plain.check!(signal())).toMatch(/^redis:\/\/127\.0\.0\.1:\d+ \(Redis \d+\.\d+/);
  });

  it('a lost connection: in-flight and later sends fail at once (retriable, unavailable); after reconnect it writes again', async () => {
    const u = new URL(REDIS_URL);
    const proxy = await createTcpProxy({ host: u.hostname, port: Number(u.port) });
    try {
      const p = prefix();
      const sink = makeSink({ url: `redis://127.0.0.1:${proxy.port}`, stream: p });
      await sink.start(signal());
      const first = testEnvelope();
      expect(await sink.send([first], signal())).toEqual([{ ok: true }]);
      proxy.refuse(true);
      const inFlight = sink
        .send(
          Array.from({ length: 2000 }, () => testEnvelope({ new: { pad: 'x'.repeat(1000) } })),
          signal(),
        )
        .then(
          (r) => r.filter((o) => !o.ok).map((o) => (o as { error: SidekickError }).error),
          (e: SidekickError) => [e],
        );
      setImmediate(() => proxy.cut());
      const failures = await inFlight;
      expect(failures.length, 'the cut must catch the batch in flight').toBeGreaterThan(0);
      for (const f of failures) expect(f).toMatchObject({ retriable: true, unavailable: true });
      // Disconnected: fails fast instead of queueing in ioredis.
      const started = Date.now();
      const down = await sink.send([testEnvelope()], signal()).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(down).toBeInstanceOf(RetriableError);
      expect(down).toMatchObject({ unavailable: true });
      expect(Date.now() - started).toBeLessThan(1_000);
      proxy.refuse(false);
      const after = testEnvelope();
      const deadline = Date.now() + 10_000;
      let result: unknown;
      while (Date.now() < deadline) {
        result = await sink.send([after], signal()).catch((e: unknown) => e);
        if (Array.isArray(result) && result[0]?.ok) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(result).toEqual([{ ok: true }]);
      const ids = (await entries(p)).map((e) => e.fields.id);
      expect(ids[0]).toBe(first.id);
      expect(ids.at(-1)).toBe(after.id);
    } finally {
      await proxy.close();
    }
  });
});

describe('redis-stream sink: 10 000 row changes through the dispatcher', () => {
  it('delivers every event, per-key order kept, read back with XRANGE', async () => {
    const p = prefix();
    const sink = makeSink({ stream: `${p}:{table}` });
    await sink.start(signal());
    const dispatcher = createDispatcher({ sink, options: dispatchOptions(), logger: quietLogger });
    const sent = rowChanges(10_000, 200);
    const results = await Promise.all(sent.map((e) => dispatcher.deliver(e)));
    await dispatcher.stop(1_000);
    expect(results.filter((r) => r.status !== 'delivered')).toEqual([]);
    const received: Received[] = (await entries(`${p}:items`)).map((e) => {
      const body = JSON.parse(e.fields.data!) as { new: { seq: number } };
      return { id: e.fields.id!, key: e.fields.key!, seq: body.new.seq };
    });
    const report = verifyDelivery(sent, received);
    expect(report.problems).toEqual([]);
    expect(report.distinct).toBe(10_000);
    expect(received).toHaveLength(10_000);
  });
});

// Last, in this file's sequence: end to end through a bridge, then Redis restarted mid-stream.
redisBridgeSuite();
redisRestartSuite();
