import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { createMessageBuilder as amqpMessage } from '../../sinks/amqp/message.js';
import { amqpOptions } from '../../sinks/amqp/options.js';
import { createMessageBuilder as kafkaMessage } from '../../sinks/kafka/message.js';
import { createEntryBuilder } from '../../sinks/redis-stream/entry.js';
import { compileHeaders } from '../../sinks/webhook/headers.js';
import { createRequestBuilder } from '../../sinks/webhook/request.js';
import { webhookOptions } from '../../sinks/webhook/options.js';
import { createCloudEvents } from '../../src/cloudevents.js';
import { compileTemplate, notifyEnvelope, TEMPLATE_FIELD_MISSING, type Envelope } from '../../src/envelope.js';

const insert: Envelope = {
  id: 'i-7',
  seq: '7',
  source: 'table',
  channel: 'public.orders',
  op: 'INSERT',
  schema: 'public',
  table: 'orders',
  key: '7',
  new: { id: 7, tenant_id: 'acme', status: 'paid', total: 12.5, vip: true, tags: ['a'], meta: { region: 'eu' }, note: null, empty: '' },
  old: null,
  at: '2026-01-01T00:00:00.000Z',
};
const del: Envelope = { ...insert, op: 'DELETE', new: null, old: { id: 7, tenant_id: 'acme', status: 'void' } };
const missing = expect.objectContaining({ name: 'FatalError', code: TEMPLATE_FIELD_MISSING, retriable: false });

describe('templates: nested fields', () => {
  it('fills {new.x}, {old.x}, {payload.x} and deeper paths; numbers and booleans as JSON text', () => {
    expect(compileTemplate('t.{new.tenant_id}.{new.meta.region}')(insert)).toBe('t.acme.eu');
    expect(compileTemplate('{new.id}-{new.total}-{new.vip}-{new.tags.0}')(insert)).toBe('7-12.5-true-a');
    expect(compileTemplate('{old.status}')(del)).toBe('void');
    const n = notifyEnvelope('jobs', '{"kind":"mail","n":{"to":"x y"}}', 1);
    expect(compileTemplate('/{payload.kind}/{payload.n.to}', encodeURIComponent)(n)).toBe('/mail/x%20y');
    expect(compileTemplate('{payload}')(notifyEnvelope('jobs', 'plain', 1))).toBe('plain');
  });
  it('refuses at compile time an unknown first segment, a path into a scalar field, a whole row and empty segments', () => {
    expect(() => compileTemplate('{neww.tenant_id}')).toThrow(/unknown template field \{neww.tenant_id\}.*\{new.<field>\}/);
    expect(() => compileTemplate('{table.x}')).toThrow(/\{table\} has no fields/);
    expect(() => compileTemplate('{new}')).toThrow(/whole row: name a column, e.g. \{new.id\}/);
    expect(() => compileTemplate('{new..x}')).toThrow(/path segment is empty/);
  });
  it('a null, missing or empty value, an object or an array, or a null row is TEMPLATE_FIELD_MISSING naming the template and the path', () => {
    const t = (s: string) => compileTemplate(s, undefined, { name: 'topic' });
    expect(() => t('x.{new.tenant_id}')(del)).toThrow(missing);
    expect(() => t('x.{new.tenant_id}')(del)).toThrow(
      'topic "x.{new.tenant_id}" needs {new.tenant_id}, which this table event on channel "public.orders" does not have (new is null)',
    );
    expect(() => t('{new.note}')(insert)).toThrow(/needs \{new.note\}.*\(it is null\)/);
    expect(() => t('{new.nope}')(insert)).toThrow(/\(it is not there\)/);
    expect(() => t('{new.empty}')(insert)).toThrow(/\(it is empty\)/);
    expect(() => t('{new.meta}')(insert)).toThrow(/\(it is an object, not a string, number or boolean\)/);
    expect(() => t('{new.tags}')(insert)).toThrow(/\(it is an array/);
    expect(() => t('{new.id.x}')(insert)).toThrow(/\(new.id is number\)/);
    expect(() => t('{payload.kind}')(notifyEnvelope('c', 'text', 1))).toThrow(missing);
    expect(compileTemplate('{new.tenant_id}', undefined, { missing: 'empty' })(del)).toBe('');
  });
});

describe('sinks: nested templates', () => {
  it('kafka topic and key', () => {
    const build = kafkaMessage({ topic: 'pg.{table}.{new.tenant_id}', key: '{new.tenant_id}:{key}', format: 'envelope' });
    expect(build(insert)).toMatchObject({ topic: 'pg.orders.acme', key: 'acme:7' });
    expect(() => build(del)).toThrow(missing);
    // The key's documented fallback still applies: a key that renders empty is the channel.
    expect(kafkaMessage({ topic: 't', key: '{old.tenant_id}', format: 'envelope' })(insert).key).toBe('public.orders');
  });
  it('amqp routing key, checked in the options', () => {
    const base = { format: 'envelope' as const, persistent: true, mandatory: true, headers: {} };
    expect(amqpMessage({ ...base, routingKey: '{new.tenant_id}.{op}' })(insert).routingKey).toBe('acme.INSERT');
    expect(() => amqpMessage({ ...base, routingKey: '{new.tenant_id}' })(del)).toThrow(missing);
    expect(() => z.object(amqpOptions).parse({ url: 'amqp://h', routingKey: '{nw.x}' })).toThrow(/unknown template field \{nw.x\}/);
  });
  it('redis stream', () => {
    const build = createEntryBuilder({ stream: 'orders:{new.tenant_id}', format: 'envelope' });
    expect(build(insert)[0]).toBe('orders:acme');
    expect(() => build(del)).toThrow(missing);
  });
  it('cloudevents source and type', () => {
    const ce = createCloudEvents({ source: '/t/{new.tenant_id}', type: 'orders.{new.status}' });
    expect(ce(insert).attributes).toMatchObject({ source: '/t/acme', type: 'orders.paid' });
  });
  it('webhook url (URL-encoded) and header values (as they are); a header value HTTP cannot carry is fatal', () => {
    const request = createRequestBuilder({
      url: 'https://h.example/t/{new.tenant_id}?s={new.status}',
      headers: { 'X-Tenant': '{new.tenant_id}', Authorization: 'Bearer s3cret' },
      format: 'envelope',
    });
    const e = { ...insert, new: { ...insert.new, tenant_id: 'a b/c' } };
    const built = request.build(e);
    expect(built.path).toBe('/t/a%20b%2Fc?s=paid');
    expect(built.headers).toMatchObject({ 'x-tenant': 'a b/c', authorization: 'Bearer s3cret', 'webhook-id': 'i-7', 'webhook-seq': '7' });
    expect(() => request.build(del)).toThrow(missing);
    expect(() => request.build({ ...insert, new: { tenant_id: 'a\r\nx: y', status: 'paid' } })).toThrow(
      expect.objectContaining({ code: 'WEBHOOK_HEADER_INVALID' }),
    );
    expect(compileHeaders({ A: 'x' }).render(insert)).toEqual({ a: 'x' });
  });
  it('webhook options: an unknown field in a header value is a config error on headers', () => {
    const parsed = z.object(webhookOptions).safeParse({ url: 'https://h/', headers: { 'X-T': '{new.tenant_id}', 'X-U': '{nope.x}' } });
    expect(parsed.success).toBe(false);
    expect(parsed.error?.issues[0]).toMatchObject({ path: ['headers'], message: expect.stringMatching(/unknown template field \{nope.x\}/) });
  });
});
