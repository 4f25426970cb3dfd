import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { sinkDefinitions } from '../../sinks/index.js';
import { createBridge } from '../../src/bridge.js';
import { parseConfig } from '../../src/config.js';
import { quietLogger } from '../contract/sink-contract.js';
import { useTestBed } from '../support/bed.js';
import { capturedClient } from '../support/bridge.js';
import { waitFor } from '../support/db.js';
import { createMemorySinks } from '../support/memory-sink.js';
import { startReceiver } from './webhook-receiver.js';

// End to end through the real bridge: captured row changes (outbox) and NOTIFYs, a route filter in
// CEL and a JSONata transform, to a real HTTP receiver and to standard output (docs/shaping.md).

const PAID = 'op == "UPDATE" && new.status == "paid" && old.status != "paid"';
const TEXT = '{"text": "Order " & $string(new.id) & " paid: " & $string(new.total)}';

describe('shaping end to end: filter + transform → webhook, stdout', () => {
  const bed = useTestBed();

  it("the webhook gets exactly the paid transitions, as the transform's body, with the envelope id in webhook-id", async () => {
    const db = await bed.database();
    const c = await capturedClient(db, 'CREATE TABLE orders (id int PRIMARY KEY, status text, total numeric)', [{ table: 'public.orders' }]);
    const receiver = await startReceiver();
    bed.defer(() => receiver.close());
    const memory = createMemorySinks();
    await bed.bridge(
      db.url,
      {
        sinks: { slack: { type: 'webhook', url: `${receiver.url}/slack` }, all: { type: 'memory' } },
        routes: [
          { name: 'paid', from: 'public.orders', filter: PAID, transform: TEXT, to: 'slack' },
          { from: 'public.orders', to: 'all' },
        ],
      },
      [memory.definition],
    );
    await c.query(`INSERT INTO orders VALUES (1, 'new', 10.5), (2, 'new', 20)`);
    await c.query(`UPDATE orders SET status = 'paid' WHERE id = 1`);
    await c.query(`UPDATE orders SET total = 11 WHERE id = 1`); // paid → paid: not a transition
    await c.query(`UPDATE orders SET status = 'shipped' WHERE id = 2`);
    await c.query(`UPDATE orders SET status = 'paid' WHERE id = 2`);
    await c.query(`DELETE FROM orders WHERE id = 1`);
    const all = memory.get('all');
    await waitFor(() => all.received.length >= 7, 'every event at the unfiltered sink');
    await waitFor(() => receiver.requests.length >= 2, 'two paid transitions');
    await new Promise((r) => setTimeout(r, 300)); // nothing else comes
    expect(receiver.requests.map((q) => JSON.parse(q.body))).toEqual([{ text: 'Order 1 paid: 10.5' }, { text: 'Order 2 paid: 20' }]);
    expect(receiver.requests.map((q) => q.headers['content-type'])).toEqual(['application/json', 'application/json']);
    const paid = all.received.filter((e) => e.op === 'UPDATE' && e.new?.status === 'paid' && e.old?.status !== 'paid');
    expect(receiver.requests.map((q) => q.headers['webhook-id'])).toEqual(paid.map((e) => e.id));
    // The unfiltered sink got the envelopes themselves.
    expect(all.received.every((e) => e.body === undefined)).toBe(true);
    // Every event settled for both sinks: the outbox is empty again.
    await waitFor(async () => (await c.query('SELECT count(*)::int AS n FROM sidekick.events')).rows[0].n === 0, 'an empty outbox');
  });

  it('stdout prints the transformed line; an event whose transform throws is dead-lettered, the others go on', async () => {
    const db = await bed.database();
    const c = await db.client();
    let printed = '';
    const stdout = new Writable({
      write(chunk, _e, cb) {
        printed += String(chunk);
        cb();
      },
    });
    const config = parseConfig(
      {
        database: db.url,
        listen: ['jobs'],
        outbox: { enabled: true },
        sinks: { console: { type: 'stdout' } },
        routes: [
          { from: 'jobs', to: 'console', filter: 'payload.n > 1.0', transform: 'payload.fail ? $error("bad job") : "job " & $string(payload.n)' },
        ],
      },
      { file: 'test', env: {}, sinks: sinkDefinitions },
    );
    const bridge = createBridge({ config, logger: quietLogger, stdout: stdout as unknown as NodeJS.WritableStream });
    try {
      await bridge.start();
      for (const p of ['{"n":1}', '{"n":2}', '{"n":3,"fail":true}', '{"n":4}']) await c.query('SELECT pg_notify($1, $2)', ['jobs', p]);
      await waitFor(() => printed.split('\n').length >= 3, 'two lines');
      await waitFor(
        async () =>
          (await c.query(`SELECT count(*)::int AS n FROM sidekick.dead_letters WHERE error_code = 'TRANSFORM_FAILED' AND error LIKE '%bad job%'`))
            .rows[0].n === 1,
        'the dead letter',
      );
      expect(printed).toBe('job 2\njob 4\n');
    } finally {
      await bridge.stop();
    }
  });

  it('a transform module that cannot be loaded stops the bridge at start with a config error naming it (not a dead letter per event)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'shape-broken-'));
    bed.defer(() => rmSync(dir, { recursive: true, force: true }));
    writeFileSync(join(dir, 'broken.mjs'), "throw new Error('broken on import');\n");
    const db = await bed.database();
    const config = parseConfig(
      {
        database: db.url,
        listen: ['jobs'],
        sinks: { out: { type: 'stdout' } },
        routes: [{ from: 'jobs', to: 'out', transform: { module: './broken.mjs' } }],
      },
      { file: join(dir, 'sidekick.yaml'), env: {}, sinks: sinkDefinitions },
    );
    const bridge = createBridge({ config, logger: quietLogger });
    bed.defer(() => bridge.stop());
    await expect(bridge.start()).rejects.toMatchObject({
      code: 'CONFIG_INVALID',
      message: expect.stringMatching(/transform module cannot be loaded: .*broken on import/),
    });
  });
});
