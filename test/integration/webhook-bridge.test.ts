import { afterEach, describe, expect, it } from 'vitest';
import { sinkDefinitions } from '../../sinks/index.js';
import { createBridge, type Bridge } from '../../src/bridge.js';
import { parseConfig } from '../../src/config.js';
import { quietLogger } from '../contract/sink-contract.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../support/db.js';
import { startReceiver, type Receiver } from './webhook-receiver.js';

// End to end: real PostgreSQL (a fresh database per test), the real bridge (config → notify
// source → router → dispatcher → webhook sink) and a real HTTP server.

const cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

async function setUp(sink: Record<string, unknown>, channels: string[]): Promise<{ db: TestDatabase; receiver: Receiver; bridge: Bridge }> {
  const db = await createTestDatabase('webhook');
  cleanup.push(() => db.drop());
  const receiver = await startReceiver();
  cleanup.push(() => receiver.close());
  const config = parseConfig(
    {
      database: db.url,
      listen: channels,
      sinks: { hook: { type: 'webhook', url: `${receiver.url}/in/{channel}`, ...sink } },
      routes: [{ from: channels, to: 'hook' }],
    },
    { sinks: sinkDefinitions },
  );
  const bridge = createBridge({ config, logger: quietLogger });
  cleanup.push(() => bridge.stop());
  await bridge.start();
  return { db, receiver, bridge };
}

describe('webhook end to end: pg_notify → bridge → HTTP receiver', () => {
  it('delivers each notification, in order, signed, with the payload verbatim', async () => {
    const { db, receiver } = await setUp({ format: 'payload', secret: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw' }, ['orders_chan']);
    const client = await db.client();
    for (let i = 1; i <= 5; i++) await client.query('SELECT pg_notify($1, $2)', ['orders_chan', `{"order": ${i}}`]);
    await client.query("SELECT pg_notify('orders_chan', 'not json')");
    await waitFor(() => receiver.requests.length >= 6, 'six webhook requests');
    expect(receiver.requests.map((q) => q.body)).toEqual([
      '{"order": 1}',
      '{"order": 2}',
      '{"order": 3}',
      '{"order": 4}',
      '{"order": 5}',
      'not json',
    ]);
    expect(receiver.requests.every((q) => q.path === '/in/orders_chan')).toBe(true);
    expect(receiver.requests[5]!.headers['content-type']).toBe('text/plain; charset=utf-8');
    expect(new Set(receiver.requests.map((q) => q.headers['webhook-id'])).size).toBe(6);
    expect(receiver.requests.every((q) => /^v1,[A-Za-z0-9+/]+=*$/.test(String(q.headers['webhook-signature'])))).toBe(true);
  });

  it("skor drop-in: skor's own notify_skor triggers + format: skor → the bodies skor posted", async () => {
    const { db, receiver } = await setUp({ format: 'skor' }, ['skor']);
    const client = await db.client();
    // The trigger shape skor's gen-triggers.py installs: pg_notify('skor', json_build_object(table, schema, op, data)).
    await client.query(`
      CREATE TABLE skor_test_t1 (c1 int PRIMARY KEY, c2 text);
      CREATE FUNCTION notify_skor_t1() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        PERFORM pg_notify('skor', json_build_object('table', TG_TABLE_NAME, 'schema', TG_TABLE_SCHEMA, 'op', TG_OP,
          'data', row_to_json(CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END))::text);
        RETURN NULL;
      END $$;
      CREATE TRIGGER notify_skor_t1 AFTER INSERT OR UPDATE OR DELETE ON skor_test_t1 FOR EACH ROW EXECUTE FUNCTION notify_skor_t1();
    `);
    await client.query("INSERT INTO skor_test_t1 VALUES (1, 'hello')");
    await client.query("UPDATE skor_test_t1 SET c2 = 'world' WHERE c1 = 1");
    await client.query('DELETE FROM skor_test_t1 WHERE c1 = 1');
    await waitFor(() => receiver.requests.length >= 3, 'three skor webhook requests');
    expect(receiver.requests.map((q) => JSON.parse(q.body))).toEqual([
      { table: 'skor_test_t1', schema: 'public', op: 'INSERT', data: { c1: 1, c2: 'hello' } },
      { table: 'skor_test_t1', schema: 'public', op: 'UPDATE', data: { c1: 1, c2: 'world' } },
      { table: 'skor_test_t1', schema: 'public', op: 'DELETE', data: { c1: 1, c2: 'world' } },
    ]);
    expect(receiver.requests.every((q) => q.method === 'POST' && q.headers['content-type'] === 'application/json')).toBe(true);
  });
});
