import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { sinkDefinitions } from '../../sinks/index.js';
import { createFormatter } from '../../sinks/webhook/formats.js';
import { createBodyFormatter } from '../../sinks/amqp/body.js';
import { createMessageBuilder } from '../../sinks/kafka/message.js';
import { parseConfig } from '../../src/config.js';
import type { Delivery, DeliveryReceiver, Dispatcher } from '../../src/dispatcher/index.js';
import { type Envelope, notifyEnvelope } from '../../src/envelope.js';
import { ConfigError } from '../../src/errors.js';
import { createLogger } from '../../src/logger.js';
import { createMetrics } from '../../src/metrics.js';
import { createPipeline } from '../../src/pipeline.js';
import { createRouter, type RouteRule } from '../../src/router.js';

const quiet = createLogger({ level: 'silent', destination: new Writable({ write: (_c, _e, cb) => cb() }) });
const parse = (doc: unknown, file = 'test.yaml') => parseConfig(doc, { file, env: {}, sinks: sinkDefinitions });
const sinks = { hook: { type: 'stdout' }, other: { type: 'stdout' } };

function configError(doc: unknown): string {
  try {
    parse(doc);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as Error).message;
  }
  throw new Error('expected a ConfigError');
}

function row(
  op: 'INSERT' | 'UPDATE' | 'DELETE',
  n: number,
  fields: { new?: Record<string, unknown> | null; old?: Record<string, unknown> | null },
): Envelope {
  return {
    id: `i-${n}`,
    seq: String(n),
    source: 'table',
    channel: 'public.orders',
    op,
    schema: 'public',
    table: 'orders',
    key: String(n),
    at: new Date().toISOString(),
    ...fields,
  };
}

/** Dispatchers that record what they are handed and answer `delivered` at once. */
function recordingDispatchers(names: string[]) {
  const got = new Map<string, Envelope[]>();
  const dispatchers = new Map<string, Dispatcher>();
  for (const name of names) {
    got.set(name, []);
    dispatchers.set(name, {
      deliverTo(e: Envelope, receiver: DeliveryReceiver) {
        got.get(name)?.push(e);
        receiver.delivered({ status: 'delivered', attempts: 1 });
      },
    } as unknown as Dispatcher);
  }
  return { got, dispatchers };
}

function setup(rules: RouteRule[], names = ['hook', 'other']) {
  const metrics = createMetrics();
  const { got, dispatchers } = recordingDispatchers(names);
  const pipeline = createPipeline({ router: createRouter(rules), dispatchers, logger: quiet, metrics });
  /** route() + deliver() as the outbox does it; resolves with each sink's outcome. */
  const send = async (e: Envelope): Promise<Record<string, Delivery>> => {
    const outcomes: Record<string, Delivery> = {};
    await Promise.all(
      pipeline.route(e).map(
        (sink) =>
          new Promise<void>((resolve) => {
            const delivered = (d: Delivery) => {
              outcomes[sink] = d;
              resolve();
            };
            pipeline.deliver(sink, e, { delivered });
          }),
      ),
    );
    return outcomes;
  };
  const count = async (name: 'filtered' | 'filterErrors' | 'transformFailures', route: string) =>
    (await metrics[name].get()).values.find((v) => v.labels.route === route)?.value;
  return { got, pipeline, send, count, metrics };
}

const PAID = 'op == "UPDATE" && new.status == "paid" && old.status != "paid"';
const TEXT = '{"text": "Order " & $string(new.id) & " paid: " & $string(new.total)}';

describe('route filters (CEL)', () => {
  it('a syntax or type error is a config error naming routes[i].filter, reported with the other problems', () => {
    const message = configError({
      sinks,
      routes: [
        { from: '*', to: 'hook' },
        { from: '*', to: 'hook', filter: 'op == ' },
        { from: '*', to: 'nope', filter: '"a" + 1' },
        { from: '*', to: 'hook', filter: 'nosuchvar == 1' },
        { from: '*', to: 'hook', filter: '1 + 2' },
      ],
    });
    expect(message).toMatch(/routes\[1\]\.filter: .*EOF.*\(CEL\)/);
    expect(message).toMatch(/routes\[2\]\.filter: no such overload: string \+ int/);
    expect(message).toContain('routes[2].to: no sink named "nope"');
    expect(message).toMatch(/routes\[3\]\.filter: Unknown variable: nosuchvar/);
    expect(message).toMatch(/routes\[4\]\.filter: .*type int.*boolean/);
    expect(message).not.toContain('routes[0]');
  });

  it('delivers only the events the filter is true for, counting the others per route', async () => {
    const t = setup([{ from: ['public.orders'], to: ['hook'], name: 'paid', filter: PAID }]);
    await t.send(row('UPDATE', 1, { new: { id: 1, status: 'paid' }, old: { id: 1, status: 'new' } }));
    await t.send(row('UPDATE', 2, { new: { id: 2, status: 'paid' }, old: { id: 2, status: 'paid' } }));
    await t.send(row('INSERT', 3, { new: { id: 3, status: 'paid' }, old: null }));
    await t.send(row('DELETE', 4, { new: null, old: { id: 4, status: 'paid' } }));
    expect(t.got.get('hook')?.map((e) => e.id)).toEqual(['i-1']);
    expect(await t.count('filtered', 'paid')).toBe(3);
    expect(await t.count('filterErrors', 'paid')).toBe(0);
    // Filtered out is not "unrouted": the channel has a route.
    expect((await t.metrics.unrouted.get()).values.filter((v) => v.value > 0)).toEqual([]);
  });

  it('an event the filter cannot evaluate does not match and is counted as an error; absent fields are null', async () => {
    const t = setup([
      { from: ['*'], to: ['hook'], filter: 'new.total + 1.0 > 10.0' },
      { from: ['*'], to: ['other'], filter: 'op == null && payload.n == 1.0' },
    ]);
    await t.send(row('UPDATE', 1, { new: { total: 50 }, old: null }));
    await t.send(row('UPDATE', 2, { new: { total: 'many' }, old: null }));
    await t.send(row('UPDATE', 3, { new: { other: 1 }, old: null }));
    await t.send(notifyEnvelope('jobs', '{"n":1}', 1));
    expect(t.got.get('hook')?.map((e) => e.id)).toEqual(['i-1']);
    expect(t.got.get('other')?.map((e) => e.channel)).toEqual(['jobs']);
    expect(await t.count('filterErrors', '0')).toBe(3); // 'many' + 1.0, a missing total, the NOTIFY's null `new`
    expect(await t.count('filtered', '0')).toBe(3);
  });
});

describe('route transforms (JSONata, modules)', () => {
  it('a JSONata syntax error is a config error naming routes[i].transform; a missing module names its path', () => {
    const message = configError({
      sinks,
      routes: [
        { from: '*', to: 'hook', transform: '{"a": }' },
        { from: '*', to: 'hook', transform: { module: './nowhere.mjs' } },
        { from: '*', to: 'hook', name: 'x' },
        { from: '*', to: 'hook', name: 'x' },
      ],
    });
    expect(message).toMatch(/routes\[0\]\.transform: .*\(JSONata\)/);
    expect(message).toMatch(/routes\[1\]\.transform\.module: no such file .*nowhere\.mjs/);
    expect(message).toContain('routes[3].name: "x" already names routes[2]');
  });

  it('the sink gets the JSONata result as its body, with the envelope id and key; other sinks the envelope', async () => {
    const t = setup([
      { from: ['public.orders'], to: ['hook'], filter: PAID, transform: TEXT },
      { from: ['public.orders'], to: ['other'] },
    ]);
    await t.send(row('UPDATE', 7, { new: { id: 7, status: 'paid', total: 12.5 }, old: { id: 7, status: 'new' } }));
    const [shaped] = t.got.get('hook') ?? [];
    expect(shaped?.body).toEqual({ value: { text: 'Order 7 paid: 12.5' }, text: '{"text":"Order 7 paid: 12.5"}', json: true });
    expect(shaped).toMatchObject({ id: 'i-7', key: '7', seq: '7' });
    expect(t.got.get('other')?.[0]?.body).toBeUndefined();
    // Every renderer sends the body instead of the envelope; cloudevents carries it as data.
    const e = shaped as Envelope;
    expect(createFormatter('envelope')(e)).toEqual({ body: '{"text":"Order 7 paid: 12.5"}', contentType: 'application/json' });
    expect(createFormatter('payload')(e).body).toBe('{"text":"Order 7 paid: 12.5"}');
    expect(JSON.parse(createFormatter('cloudevents')(e).body)).toMatchObject({ id: 'i-7', subject: '7', data: { text: 'Order 7 paid: 12.5' } });
    expect(createBodyFormatter('envelope')(e).text).toBe('{"text":"Order 7 paid: 12.5"}');
    expect(createMessageBuilder({ topic: 't', key: '{key}', format: 'envelope' })(e)).toMatchObject({
      key: '7',
      value: '{"text":"Order 7 paid: 12.5"}',
      headers: { id: 'i-7' },
    });
  });

  it('a null or undefined result drops the event for that sink: settled, nothing sent, counted as filtered', async () => {
    const t = setup([{ from: ['*'], to: ['hook'], name: 'big', transform: 'new.total > 100 ? new : null' }]);
    const outcomes = [
      await t.send(row('INSERT', 1, { new: { total: 500 } })),
      await t.send(row('INSERT', 2, { new: { total: 5 } })),
      await t.send(notifyEnvelope('jobs', 'x', 1)),
    ];
    expect(t.got.get('hook')?.map((e) => e.id)).toEqual(['i-1']);
    expect(outcomes.map((o) => o.hook?.status)).toEqual(['delivered', 'delivered', 'delivered']);
    expect(outcomes[1]?.hook?.attempts).toBe(0);
    expect(await t.count('filtered', 'big')).toBe(2);
  });

  it('a module transform (default export, may be async) is loaded once from the config file folder; a string result is text', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'shape-'));
    writeFileSync(
      join(dir, 'shape.mjs'),
      'globalThis.__shapeLoads = (globalThis.__shapeLoads ?? 0) + 1;\nexport default async (e) => e.op === "DELETE" ? null : `${e.op} ${e.new.id}`;\n',
    );
    const config = parse({ sinks, routes: [{ from: '*', to: 'hook', transform: { module: './shape.mjs' } }] }, join(dir, 'sidekick.yaml'));
    expect(config.routes[0]?.transform).toEqual({ module: join(dir, 'shape.mjs') });
    const t = setup([...config.routes]);
    await t.pipeline.ready;
    await t.send(row('INSERT', 1, { new: { id: 1 } }));
    await t.send(row('DELETE', 2, { old: { id: 2 } }));
    await t.send(row('UPDATE', 3, { new: { id: 3 } }));
    expect(t.got.get('hook')?.map((e) => e.body)).toEqual([
      { value: 'INSERT 1', text: 'INSERT 1', json: false },
      { value: 'UPDATE 3', text: 'UPDATE 3', json: false },
    ]);
    expect(createFormatter('envelope')(t.got.get('hook')?.[0] as Envelope).contentType).toBe('text/plain; charset=utf-8');
    expect((globalThis as { __shapeLoads?: number }).__shapeLoads).toBe(1);
  });

  it('a transform that throws dead-letters that event only (TRANSFORM_FAILED), counted per route; the next ones go on, in order', async () => {
    const t = setup([{ from: ['*'], to: ['hook'], name: 'strict', transform: '$boom := new.ok ? new : $error("not ok")' }]);
    const outcomes = await Promise.all([
      t.send(row('INSERT', 1, { new: { ok: true, n: 1 } })),
      t.send(row('INSERT', 2, { new: { ok: false, n: 2 } })),
      t.send(row('INSERT', 3, { new: { ok: true, n: 3 } })),
    ]);
    expect(outcomes.map((o) => o.hook?.status)).toEqual(['delivered', 'dead', 'delivered']);
    const dead = outcomes[1]?.hook as Extract<Delivery, { status: 'dead' }>;
    expect(dead.error.code).toBe('TRANSFORM_FAILED');
    expect(dead.error.message).toContain('not ok');
    expect(t.got.get('hook')?.map((e) => e.id)).toEqual(['i-1', 'i-3']);
    expect(await t.count('transformFailures', 'strict')).toBe(1);
  });

  it('two routes to one sink with different transforms: the sink gets one copy per transform, one outcome', async () => {
    const t = setup([
      { from: ['*'], to: ['hook'], transform: '{"a": new.n}' },
      { from: ['*'], to: ['hook'], transform: '{"b": new.n}' },
      { from: ['*'], to: ['hook'], transform: '{"a": new.n}' },
    ]);
    const outcome = await t.send(row('INSERT', 1, { new: { n: 1 } }));
    expect(outcome.hook?.status).toBe('delivered');
    expect(t.got.get('hook')?.map((e) => e.body?.text)).toEqual(['{"a":1}', '{"b":1}']);
  });

  it('without filters or transforms the pipeline hands the same envelope object over (no copy)', async () => {
    const t = setup([{ from: ['*'], to: ['hook'] }]);
    const e = row('INSERT', 1, { new: { n: 1 } });
    await t.send(e);
    expect(t.got.get('hook')?.[0]).toBe(e);
    // The series of shaping routes exist at 0 from the start.
    const m = setup([{ from: ['*'], to: ['hook'], name: 'r', filter: 'true' }]);
    expect(await m.count('filtered', 'r')).toBe(0);
    expect(await m.count('transformFailures', 'r')).toBe(0);
  });
});
