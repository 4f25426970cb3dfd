import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { createBodyFormatter, opOf } from '../../sinks/amqp/body.js';
import { createMessageBuilder } from '../../sinks/amqp/message.js';
import { amqpOptions } from '../../sinks/amqp/options.js';
import { envelopeJson, notifyEnvelope, type Envelope } from '../../src/envelope.js';

const row: Envelope = {
  id: '17',
  source: 'table',
  channel: 'public.orders',
  op: 'UPDATE',
  schema: 'public',
  table: 'orders',
  key: '5',
  new: { id: 5, total: 10 },
  old: { id: 5, total: 9 },
  at: '2024-05-01T12:00:00.250Z',
  txid: '99',
};

describe('amqp options', () => {
  const schema = z.strictObject(amqpOptions);
  it('fills the documented defaults', () => {
    expect(schema.parse({ url: 'amqp://localhost' })).toEqual({
      url: 'amqp://localhost',
      exchange: 'pg-sidekick',
      exchangeType: 'topic',
      declare: true,
      routingKey: '{channel}.{op}',
      format: 'envelope',
      cloudevents: { source: '/pg-sidekick/{channel}' },
      persistent: true,
      headers: {},
      mandatory: true,
      unroutable: 'retry',
      heartbeat: 30_000,
      connectTimeout: 10_000,
      confirmTimeout: 30_000,
    });
  });
  it('rejects a non-AMQP URL, an unknown template field and unknown keys, naming them', () => {
    expect(() => schema.parse({ url: 'http://x' })).toThrow(/amqp:\/\/ or amqps:\/\//);
    expect(() => schema.parse({ url: 'amqp://x', routingKey: '{tabel}' })).toThrow(/routingKey: unknown template field \{tabel\}/);
    expect(() => schema.parse({ url: 'amqp://x', exchnage: 'typo' })).toThrow(/exchnage/);
    expect(() => schema.parse({ url: 'amqp://x', unroutable: 'drop' })).toThrow();
  });
});

describe('amqp message', () => {
  const base = { routingKey: '{schema}.{table}.{op}', format: 'envelope' as const, persistent: true, mandatory: true, headers: {} };
  it('envelope format: JSON body, messageId, persistent, timestamp in seconds, envelope headers', () => {
    const m = createMessageBuilder(base)(row);
    expect(m.routingKey).toBe('public.orders.UPDATE');
    expect(JSON.parse(m.content.toString())).toEqual(envelopeJson(row));
    expect(m.properties).toEqual({
      mandatory: true,
      deliveryMode: 2,
      messageId: '17',
      contentType: 'application/json',
      appId: 'pg-sidekick',
      timestamp: 1714564800,
      headers: { source: 'table', channel: 'public.orders', op: 'UPDATE', schema: 'public', table: 'orders', key: '5' },
    });
  });
  it('static headers are added; the envelope headers win on a clash; contentType can be overridden', () => {
    const m = createMessageBuilder({ ...base, headers: { tenant: 'a', channel: 'spoof' }, contentType: 'application/vnd.x+json', persistent: false })(
      row,
    );
    expect(m.properties.headers).toMatchObject({ tenant: 'a', channel: 'public.orders' });
    expect(m.properties.contentType).toBe('application/vnd.x+json');
    expect(m.properties.deliveryMode).toBe(1);
  });
  it('durable events carry seq (order per key) in the headers beside messageId = id (dedupe)', () => {
    const m = createMessageBuilder(base)({ ...row, id: '3f9c2a1b7d4e6f80-17', seq: '17' });
    expect(m.properties.messageId).toBe('3f9c2a1b7d4e6f80-17');
    expect(m.properties.headers).toMatchObject({ seq: '17' });
  });
  it('NOTIFY envelopes: {op} is NOTIFY; no seq/op/schema/table/key headers', () => {
    const n = notifyEnvelope('jobs', 'hello', 3);
    const m = createMessageBuilder({ ...base, routingKey: '{channel}.{op}' })(n);
    expect(m.routingKey).toBe('jobs.NOTIFY');
    expect(m.properties.headers).toEqual({ source: 'notify', channel: 'jobs' });
  });
  it('a routing key template the event cannot fill is a per-event FatalError, not the routing key "..NOTIFY"', () => {
    expect(() => createMessageBuilder(base)(notifyEnvelope('jobs', 'hello', 3))).toThrow(
      expect.objectContaining({
        code: 'TEMPLATE_FIELD_MISSING',
        retriable: false,
        message: expect.stringMatching(/^routingKey "\{schema\}\.\{table\}\.\{op\}" needs \{schema\}/),
      }),
    );
  });
});

describe('broker body formats', () => {
  it('opOf: the row op, else the source in capitals', () => {
    expect(opOf(row)).toBe('UPDATE');
    expect(opOf(notifyEnvelope('c', '', 1))).toBe('NOTIFY');
    expect(opOf({ ...row, op: undefined, source: 'publish' })).toBe('PUBLISH');
  });
  it('payload: NOTIFY text verbatim (text/plain unless JSON); row changes give the row image', () => {
    const formatBody = (e: Envelope, f: 'payload') => createBodyFormatter(f)(e);
    expect(formatBody(notifyEnvelope('c', ' {"a":1} ', 1), 'payload')).toEqual({ text: ' {"a":1} ', contentType: 'application/json' });
    expect(formatBody(notifyEnvelope('c', 'plain', 1), 'payload')).toEqual({ text: 'plain', contentType: 'text/plain; charset=utf-8' });
    expect(formatBody(notifyEnvelope('c', '"quoted"', 1), 'payload').contentType).toBe('application/json');
    expect(formatBody(row, 'payload').text).toBe('{"id":5,"total":10}');
    expect(formatBody({ ...row, op: 'DELETE', new: null }, 'payload').text).toBe('{"id":5,"total":9}');
  });
  it('cloudevents: the one CloudEvents mapping of every sink (test/contract/cloudevents.test.ts), structured', () => {
    const body = createBodyFormatter('cloudevents')(row);
    expect(JSON.parse(body.text)).toEqual({
      specversion: '1.0',
      id: '17',
      source: '/pg-sidekick/public.orders',
      type: 'pg-sidekick.row.update',
      subject: '5',
      time: row.at,
      datacontenttype: 'application/json',
      data: { op: 'UPDATE', schema: 'public', table: 'orders', key: '5', new: row.new, old: row.old, txid: '99' },
    });
    expect(body.contentType).toBe('application/cloudevents+json; charset=utf-8');
    const custom = createBodyFormatter('cloudevents', { cloudEvents: { source: 'urn:{channel}', type: 'com.example.{op}' } });
    expect(JSON.parse(custom(notifyEnvelope('jobs', 'x', 1)).text)).toMatchObject({ source: 'urn:jobs', type: 'com.example.NOTIFY' });
  });
});
