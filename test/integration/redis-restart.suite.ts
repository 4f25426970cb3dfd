import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { redisStreamSink } from '../../sinks/redis-stream/index.js';
import { redisStreamOptions } from '../../sinks/redis-stream/options.js';
import { createDispatcher, type Delivery } from '../../src/dispatcher/index.js';
import type { Envelope } from '../../src/envelope.js';
import { contractContext, quietLogger } from '../contract/sink-contract.js';
import { waitFor } from '../support/db.js';
import { serviceEnv } from '../support/services.js';
import { closedPort, dispatchOptions, within, randomName, rowChanges, services, verifyDelivery, type Received } from './amqp-redis-helpers.js';

// Redis stopped and restarted in the middle of a stream of row changes.
//
// The shared test Redis runs without persistence (scripts/services.sh: --save '' --appendonly no),
// so a restart empties it: whatever it had acknowledged and nobody had read yet is gone with it,
// which is Redis's durability setting, not something a client can fix. Hence two tests:
//
// 1. "nothing lost" is checked strictly against a Redis the test starts itself with the append-only
//    file fsynced on every write (--appendfsync always: acknowledged = on disk), killed with SIGKILL
//    in the middle of the stream and started again on the same port. Every event must be in the
//    stream afterwards (XRANGE), in per-key order; duplicates are allowed (at-least-once).
// 2. The shared Redis is stopped and started with scripts/services.sh while an independent
//    consumer follows the stream with XREAD BLOCK. Checked strictly: the sink recovers by itself,
//    every event is reported delivered, every event handed over once Redis was back is read, and
//    what was read keeps per-key order. Events acknowledged just before the stop but not yet read
//    are lost by Redis itself (no persistence) and only counted.

const schema = z.strictObject(redisStreamOptions);

function row(e: { fields: Record<string, string> }): Received {
  const body = JSON.parse(e.fields.data!) as { new: { seq: number } };
  return { id: e.fields.id!, key: e.fields.key!, seq: body.new.seq };
}

function toFields(flat: string[]): Record<string, string> {
  const fields: Record<string, string> = {};
  for (let i = 0; i < flat.length; i += 2) fields[flat[i] as string] = flat[i + 1] as string;
  return fields;
}

/** Streams `all` into the dispatcher at ≈ 2 000 events/s until stopped. */
function startProducer(all: readonly Envelope[], deliver: (e: Envelope) => Promise<Delivery>) {
  const sent: Envelope[] = [];
  const results: Promise<Delivery>[] = [];
  let producing = true;
  const done = (async () => {
    while (producing && sent.length < all.length) {
      for (const e of all.slice(sent.length, sent.length + 50)) {
        sent.push(e);
        results.push(deliver(e));
      }
      await new Promise((r) => setTimeout(r, 25));
    }
  })();
  return {
    sent,
    results,
    async stop() {
      producing = false;
      await done;
    },
  };
}

async function startRedis(port: number, dir: string): Promise<ChildProcess> {
  const child = spawn(
    'redis-server',
    [
      '--bind',
      '127.0.0.1',
      '--port',
      String(port),
      '--dir',
      dir,
      '--save',
      '',
      '--appendonly',
      'yes',
      '--appendfsync',
      'always',
      '--protected-mode',
      'no',
    ],
    { stdio: 'ignore' },
  );
  const probe = new Redis({ port, host: '127.0.0.1', lazyConnect: true, retryStrategy: () => 20, maxRetriesPerRequest: null });
  probe.on('error', () => {});
  try {
    await waitFor(async () => (await probe.ping().catch(() => '')) === 'PONG', `redis-server on ${port}`, 10_000, 20);
  } finally {
    probe.disconnect();
  }
  return child;
}

/**
 * Called last from redis-stream.test.ts: the second test takes the shared Redis away, so no other
 * Redis test may run beside it (vitest runs one file's tests in sequence; files run in parallel).
 */
export function redisRestartSuite(): void {
  describe('redis-stream sink: Redis restarted in the middle of a stream', () => {
    it('own Redis with appendfsync always, killed (SIGKILL) and restarted: nothing lost, per-key order kept', async () => {
      const dir = mkdtempSync(join(tmpdir(), 'sk-redis-aof-'));
      const port = await closedPort();
      let server = await startRedis(port, dir);
      const stream = randomName('sk-aof');
      const sink = redisStreamSink.create(schema.parse({ url: `redis://127.0.0.1:${port}`, stream }), contractContext('redis-aof'));
      const dispatcher = createDispatcher({
        sink,
        options: dispatchOptions({ retry: { attempts: 1000, initialDelay: 50, maxDelay: 500 } }),
        logger: quietLogger,
      });
      try {
        await sink.start(new AbortController().signal);
        const producer = startProducer(rowChanges(200_000, 100), (e) => dispatcher.deliver(e));
        await waitFor(() => producer.sent.length >= 2_000, 'the stream to be flowing', 10_000, 20);
        server.kill('SIGKILL');
        await new Promise((resolve) => server.once('exit', resolve));
        const atKill = producer.sent.length;
        await waitFor(() => producer.sent.length >= atKill + 1_000, 'events while Redis is down', 10_000, 20);
        server = await startRedis(port, dir);
        const atStart = producer.sent.length;
        await waitFor(() => producer.sent.length >= atStart + 2_000, 'events after the restart', 20_000, 20);
        await producer.stop();
        const outcomes = await within(Promise.all(producer.results), 60_000, 'every delivery to finish');
        expect(outcomes.filter((o) => o.status !== 'delivered')).toEqual([]);
        expect(outcomes.some((o) => o.attempts > 1)).toBe(true);

        const reader = new Redis({ port, host: '127.0.0.1' });
        const got = (await reader.xrange(stream, '-', '+')).map(([, flat]) => row({ fields: toFields(flat) }));
        reader.disconnect();
        const report = verifyDelivery(producer.sent, got);
        console.info(
          `redis (AOF) kill -9: ${producer.sent.length} events (${atKill} before the kill), ${report.distinct} distinct in the stream, ` +
            `${report.duplicates} duplicates`,
        );
        expect(report.problems).toEqual([]);
      } finally {
        await dispatcher.stop(1_000);
        await sink.stop();
        server.kill('SIGKILL');
        rmSync(dir, { recursive: true, force: true });
      }
    }, 120_000);

    it('shared Redis stopped and started with scripts/services.sh: the sink recovers, every event after the restart is read, order kept', async () => {
      const url = serviceEnv().REDIS_URL;
      const stream = randomName('sk-restart');
      const sink = redisStreamSink.create(schema.parse({ url, stream }), contractContext('redis-restart'));
      const dispatcher = createDispatcher({
        sink,
        options: dispatchOptions({ retry: { attempts: 1000, initialDelay: 50, maxDelay: 500 } }),
        logger: quietLogger,
      });

      // The independent consumer: XREAD BLOCK from its own connection, recording entries as they come.
      const consumer = new Redis(url, { maxRetriesPerRequest: null, retryStrategy: () => 50 });
      consumer.on('error', () => {});
      const got: Received[] = [];
      let following = true;
      let lastId = '0';
      const follow = (async () => {
        while (following) {
          try {
            const reply = await consumer.xread('COUNT', 5000, 'BLOCK', 200, 'STREAMS', stream, lastId);
            for (const [, rows] of reply ?? []) {
              for (const [id, flat] of rows) {
                got.push(row({ fields: toFields(flat) }));
                lastId = id;
              }
            }
          } catch {
            // The server went away: the stream it comes back with is a new, empty one.
            lastId = '0';
            await new Promise((r) => setTimeout(r, 50));
          }
        }
      })();

      let afterUp = 0;
      let producer: ReturnType<typeof startProducer> | undefined;
      try {
        await sink.start(new AbortController().signal);
        producer = startProducer(rowChanges(200_000, 100), (e) => dispatcher.deliver(e));
        await waitFor(() => producer!.sent.length >= 2_000, 'the stream to be flowing', 10_000, 20);
        const down = await services('down', 'redis');
        const atStop = producer.sent.length;
        const up = await services('up', 'redis');
        afterUp = producer.sent.length;
        await waitFor(() => producer!.sent.length >= afterUp + 2_000, 'events after the restart', 20_000, 20);
        await producer.stop();
        const outcomes = await within(Promise.all(producer.results), 60_000, 'every delivery to finish');
        expect(outcomes.filter((o) => o.status !== 'delivered')).toEqual([]);
        expect(outcomes.some((o) => o.attempts > 1)).toBe(true);
        const late = new Set(producer.sent.slice(afterUp).map((e) => e.id));
        await waitFor(
          () => {
            const read = new Set(got.map((r) => r.id));
            return [...late].every((id) => read.has(id));
          },
          'the consumer to read every event handed over after the restart',
          10_000,
          20,
        ).catch(() => undefined);

        const report = verifyDelivery(producer.sent, got);
        const lateMissing = report.missing.filter((id) => late.has(id));
        console.info(
          `redis restart (services.sh): ${producer.sent.length} events, down ${down.ms} ms (${atStop} handed over by then), up ${up.ms} ms; ` +
            `${report.distinct} distinct read, ${report.duplicates} duplicates, ${report.missing.length} lost with Redis's memory before being read`,
        );
        expect(lateMissing).toEqual([]);
        expect(report.problems.filter((p) => !/missing/.test(p))).toEqual([]);
      } finally {
        await producer?.stop();
        following = false;
        await follow;
        await dispatcher.stop(1_000);
        await sink.stop();
        await consumer.del(stream).catch(() => {});
        consumer.disconnect();
      }
    }, 120_000);
  });
}
