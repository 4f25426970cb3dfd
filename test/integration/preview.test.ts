import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { type EventResult, previewCommand } from '../../src/commands/preview.js';
import { envelopeJson } from '../../src/envelope.js';
import { useTestBed } from '../support/bed.js';
import { capturedClient } from '../support/bridge.js';
import { waitFor } from '../support/db.js';
import { createMemorySinks } from '../support/memory-sink.js';
import { startReceiver } from './webhook-receiver.js';

// `sidekick preview` (docs/shaping.md#preview) prints what a sink would send; here it is compared
// with what a real HTTP receiver then gets from a real bridge for the same event.

function capture(): { stream: Writable; text: () => string } {
  let text = '';
  const stream = new Writable({
    write(chunk, _e, cb) {
      text += String(chunk);
      cb();
    },
  });
  return { stream, text: () => text };
}

async function preview(options: Parameters<typeof previewCommand>[0]): Promise<{ code: number; out: string }> {
  const out = capture();
  const err = capture();
  const code = await previewCommand(options, { stdout: out.stream, stderr: err.stream, env: {}, signal: new AbortController().signal });
  return { code, out: out.text() };
}

describe('sidekick preview', () => {
  const bed = useTestBed();
  const dir = mkdtempSync(join(tmpdir(), 'sk-preview-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('prints exactly what the webhook then receives: URL and header from nested templates, the transformed body, webhook-id', async () => {
    const db = await bed.database();
    const c = await capturedClient(db, 'CREATE TABLE orders (id int PRIMARY KEY, tenant_id text, status text, total numeric)', [
      { table: 'public.orders' },
    ]);
    const receiver = await startReceiver();
    bed.defer(() => receiver.close());
    const memory = createMemorySinks();
    const document = {
      sinks: {
        hook: { type: 'webhook', url: `${receiver.url}/t/{new.tenant_id}/orders?status={new.status}`, headers: { 'X-Tenant': '{new.tenant_id}' } },
      },
      routes: [
        { name: 'paid', from: 'public.orders', filter: 'new.status == "paid"', transform: '{"order": new.id, "total": new.total}', to: 'hook' },
        { name: 'other', from: 'public.customers', to: 'hook' },
      ],
    };
    await bed.bridge(
      db.url,
      { ...document, sinks: { ...document.sinks, all: { type: 'memory' } }, routes: [...document.routes, { from: '*', to: 'all' }] },
      [memory.definition],
    );
    await c.query(`INSERT INTO orders VALUES (1, 'acme co', 'paid', 12.5), (2, 'globex', 'new', 3)`);
    await waitFor(() => receiver.requests.length >= 1 && memory.get('all').received.length >= 2, 'the paid order at the hook');
    const [paid, unpaid] = memory.get('all').received;
    const eventFile = join(dir, 'event.json');
    writeFileSync(eventFile, `${JSON.stringify(envelopeJson(paid!))}\n${JSON.stringify(envelopeJson(unpaid!))}\n`);
    const configFile = join(dir, 'config.json');
    writeFileSync(configFile, JSON.stringify({ database: db.url, outbox: { enabled: true }, ...document }));

    const { code, out } = await preview({ config: configFile, event: eventFile, json: true });
    expect(code).toBe(0);
    const results = JSON.parse(out) as EventResult[];
    expect(results.map((r) => r.routes.map((x) => [x.route, x.channel, x.filter, x.matches]))).toEqual([
      [
        ['paid', true, true, true],
        ['other', false, undefined, false],
      ],
      [
        ['paid', true, false, false],
        ['other', false, undefined, false],
      ],
    ]);
    const shown = results[0]!.routes[0]!.sinks[0]!.preview!;
    const got = receiver.requests[0]!;
    expect(shown.target).toEqual({ method: 'POST', url: `${receiver.url}${got.path}` });
    expect(got.path).toBe('/t/acme%20co/orders?status=paid');
    expect(shown.body).toBe(got.body);
    expect(JSON.parse(shown.body)).toEqual({ order: 1, total: 12.5 });
    for (const name of ['content-type', 'user-agent', 'x-tenant', 'webhook-id', 'webhook-seq'])
      expect([name, shown.headers[name]]).toEqual([name, got.headers[name]]);
    expect(receiver.requests).toHaveLength(1);

    // The human form says the same in lines.
    const human = (await preview({ config: configFile, event: eventFile })).out;
    expect(human).toContain(
      `route paid (routes[0]): match (transformed)\n    → hook (webhook): method POST, url ${receiver.url}/t/acme%20co/orders?status=paid\n`,
    );
    expect(human).toContain('        x-tenant: acme co\n');
    expect(human).toContain(`        body: ${got.body}\n`);
    expect(human).toContain('route paid (routes[0]): no match (filter false)');
    expect(human).toContain('route other (routes[1]): no match (channel)');

    // --table: the table's last rows as READ events, from the database only.
    const table = JSON.parse((await preview({ config: configFile, table: 'orders', limit: 2, json: true })).out) as EventResult[];
    expect(table.map((r) => [r.event.op, r.event.key, r.routes[0]!.matches])).toEqual([
      ['READ', '1', true],
      ['READ', '2', false],
    ]);
    expect(table[0]!.routes[0]!.sinks[0]!.preview!.body).toBe(got.body);
  });

  it('a config error names its key; a template the event cannot fill shows the dead letter it would be', async () => {
    const bad = join(dir, 'bad.json');
    writeFileSync(bad, JSON.stringify({ sinks: { k: { type: 'stdout' } }, routes: [{ from: '*', filter: 'op ==', to: 'k' }] }));
    const event = join(dir, 'notify.json');
    writeFileSync(event, JSON.stringify({ id: 'n1', source: 'notify', channel: 'jobs', payload: { kind: 'mail' }, at: '2026-01-01T00:00:00Z' }));
    await expect(preview({ config: bad, event })).rejects.toThrow(/routes\[0\]\.filter/);
    const badSink = join(dir, 'bad-sink.json');
    writeFileSync(
      badSink,
      JSON.stringify({ sinks: { k: { type: 'redis-stream', url: 'redis://h', stream: '{nope.x}' } }, routes: [{ from: '*', to: 'k' }] }),
    );
    await expect(preview({ config: badSink, event })).rejects.toThrow(/sinks\.k\.stream/);

    const ok = join(dir, 'ok.json');
    writeFileSync(
      ok,
      JSON.stringify({
        sinks: {
          k: { type: 'kafka', brokers: 'nowhere:9092', topic: 'jobs.{payload.kind}' },
          r: { type: 'redis-stream', url: 'redis://nowhere', stream: 's:{new.tenant_id}' },
        },
        routes: [{ from: 'jobs', to: ['k', 'r'] }],
      }),
    );
    const out = (await preview({ config: ok, event })).out;
    expect(out).toContain('    → k (kafka): topic jobs.mail, key jobs\n');
    expect(out).toContain('    → r (redis-stream): dead letter TEMPLATE_FIELD_MISSING: stream "s:{new.tenant_id}" needs {new.tenant_id}');
  });
});
