import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Cluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { redisStreamSink } from '../../sinks/redis-stream/index.js';
import { redisStreamOptions } from '../../sinks/redis-stream/options.js';
import { createDispatcher } from '../../src/dispatcher/index.js';
import type { SidekickError } from '../../src/errors.js';
import { contractContext, quietLogger, testEnvelope } from '../contract/sink-contract.js';
import { waitFor } from '../support/db.js';
import { closedPort, dispatchOptions, randomName, rowChanges, verifyDelivery, type Received } from './amqp-redis-helpers.js';

// A real three-node Redis Cluster (no replicas), started by this test from the redis-server that
// scripts/services.sh installs, on free ports in a temporary directory.

const run = promisify(execFile);
const schema = z.strictObject(redisStreamOptions);

describe('redis-stream sink against a real Redis Cluster (3 masters, started by the test)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sk-redis-cluster-'));
  const nodes: ChildProcess[] = [];
  const ports: number[] = [];
  let reader: Cluster;

  beforeAll(async () => {
    for (let i = 0; i < 3; i++) {
      const port = await closedPort();
      ports.push(port);
      nodes.push(
        spawn(
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
            'no',
            '--cluster-enabled',
            'yes',
            '--cluster-config-file',
            `nodes-${port}.conf`,
            '--protected-mode',
            'no',
          ],
          { stdio: 'ignore' },
        ),
      );
    }
    for (const port of ports) {
      await waitFor(
        async () => (await run('redis-cli', ['-p', String(port), 'ping']).catch(() => ({ stdout: '' }))).stdout.trim() === 'PONG',
        `node ${port}`,
        10_000,
        50,
      );
    }
    await run('redis-cli', ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes']);
    for (const port of ports) {
      await waitFor(
        async () => /cluster_state:ok/.test((await run('redis-cli', ['-p', String(port), 'cluster', 'info'])).stdout),
        `cluster state ok on ${port}`,
        15_000,
        50,
      );
    }
    reader = new Cluster([{ host: '127.0.0.1', port: ports[0]! }]);
  }, 60_000);

  afterAll(async () => {
    reader?.disconnect();
    for (const n of nodes) n.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  it('writes each stream to the node of its slot, in per-key order, with per-item outcomes', async () => {
    const p = randomName('sk-cl');
    const sink = redisStreamSink.create(
      schema.parse({ cluster: { nodes: [`127.0.0.1:${ports[0]}`] }, stream: `${p}:{key}` }),
      contractContext('redis-cluster'),
    );
    try {
      await sink.start(new AbortController().signal);
      expect(await sink.check!(new AbortController().signal)).toMatch(/^cluster 127\.0\.0\.1:\d+/);
      // 20 keys → 20 streams spread over the three masters' slots.
      const dispatcher = createDispatcher({ sink, options: dispatchOptions(), logger: quietLogger });
      const sent = rowChanges(2_000, 20);
      const results = await Promise.all(sent.map((e) => dispatcher.deliver(e)));
      await dispatcher.stop(1_000);
      expect(results.filter((r) => r.status !== 'delivered')).toEqual([]);
      const got: Received[] = [];
      for (let k = 0; k < 20; k++) {
        for (const [, flat] of await reader.xrange(`${p}:${k}`, '-', '+')) {
          const f = Object.fromEntries(Array.from({ length: flat.length / 2 }, (_, i) => [flat[2 * i], flat[2 * i + 1]]));
          got.push({ id: f.id!, key: f.key!, seq: (JSON.parse(f.data!) as { new: { seq: number } }).new.seq });
        }
      }
      expect(verifyDelivery(sent, got).problems).toEqual([]);
      const slotsUsed = new Set(await Promise.all(Array.from({ length: 20 }, (_, k) => reader.cluster('KEYSLOT', `${p}:${k}`))));
      expect(slotsUsed.size).toBeGreaterThan(1);

      // A key holding a string on one node: WRONGTYPE for that item only.
      await reader.set(`${p}:taken`, 'x');
      const result = await sink.send(
        [testEnvelope({ key: 'a' }), testEnvelope({ key: 'taken' }), testEnvelope({ key: 'b' })],
        new AbortController().signal,
      );
      expect(result[0]).toEqual({ ok: true });
      expect((result[1] as { error: SidekickError }).error).toMatchObject({ code: 'REDIS_WRONGTYPE', retriable: false });
      expect(result[2]).toEqual({ ok: true });
    } finally {
      await sink.stop();
    }
  });
});
