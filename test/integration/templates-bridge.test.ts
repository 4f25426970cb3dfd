import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { useTestBed } from '../support/bed.js';
import { capturedClient } from '../support/bridge.js';
import { waitFor } from '../support/db.js';
import { serviceEnv } from '../support/services.js';
import { randomName } from './amqp-redis-helpers.js';

// Nested template fields end to end (docs/shaping.md#templates): one redis-stream sink fans a
// captured table out to one stream per tenant from `{new.tenant_id}`; a row without a tenant is
// dead-lettered with TEMPLATE_FIELD_MISSING naming the template and the path, and the others go on.

const REDIS_URL = serviceEnv().REDIS_URL;
const reader = new Redis(REDIS_URL, { lazyConnect: true });
afterAll(() => reader.disconnect());

async function ids(key: string): Promise<number[]> {
  const rows = await reader.xrange(key, '-', '+');
  return rows.map(([, flat]) => JSON.parse(flat[flat.indexOf('data') + 1] as string).new.id as number);
}

describe('nested templates through the bridge', () => {
  const bed = useTestBed();

  it('per-tenant Redis streams from {new.tenant_id}; a row without one is a TEMPLATE_FIELD_MISSING dead letter', async () => {
    const db = await bed.database();
    const c = await capturedClient(db, 'CREATE TABLE orders (id int PRIMARY KEY, tenant_id text)', [{ table: 'public.orders' }]);
    const p = randomName('tenants');
    bed.defer(async () => {
      await reader.del(`${p}:acme`, `${p}:globex`);
    });
    await bed.bridge(db.url, {
      sinks: { per_tenant: { type: 'redis-stream', url: REDIS_URL, stream: `${p}:{new.tenant_id}` } },
      routes: [{ from: 'public.orders', to: 'per_tenant' }],
    });
    await c.query(`INSERT INTO orders VALUES (1, 'acme'), (2, 'globex'), (3, NULL), (4, 'acme')`);
    await waitFor(async () => (await reader.xlen(`${p}:acme`)) === 2 && (await reader.xlen(`${p}:globex`)) === 1, 'both tenant streams');
    expect(await ids(`${p}:acme`)).toEqual([1, 4]);
    expect(await ids(`${p}:globex`)).toEqual([2]);
    await waitFor(async () => (await c.query('SELECT count(*)::int AS n FROM sidekick.dead_letters')).rows[0].n === 1, 'one dead letter');
    const { rows } = await c.query('SELECT sink, error_code, error FROM sidekick.dead_letters');
    expect(rows[0]).toMatchObject({ sink: 'per_tenant', error_code: 'TEMPLATE_FIELD_MISSING' });
    expect(rows[0].error).toContain(`stream "${p}:{new.tenant_id}" needs {new.tenant_id}`);
  });
});
