import { describe, expect, it } from 'vitest';
import { createMessageBuilder as amqpMessage } from '../../sinks/amqp/message.js';
import { createMessageBuilder as kafkaRecord } from '../../sinks/kafka/message.js';
import { createEntryBuilder as redisEntry } from '../../sinks/redis-stream/entry.js';
import { createFormatter as webhookFormatter } from '../../sinks/webhook/formats.js';
import { notifyEnvelope, type Envelope } from '../../src/envelope.js';

// Issue 16 item 11: one event is one CloudEvent, whichever sink carries it (docs/cloudevents.md).
// Each sink's structured CloudEvent is taken through the sink's own message builder, as it goes on
// the wire, and compared with the one documented definition.

const row: Envelope = {
  id: '3f9c2a1b7d4e6f80-42',
  seq: '42',
  source: 'table',
  channel: 'public.orders',
  op: 'UPDATE',
  schema: 'public',
  table: 'orders',
  key: '5',
  new: { id: 5, status: 'paid' },
  old: { id: 5, status: 'new' },
  at: '2024-05-01T12:00:00.250Z',
  txid: '99',
};
const jsonNotify: Envelope = { ...notifyEnvelope('jobs', '{"run":"nightly"}', 7), id: 'a1b2', at: '2024-05-01T12:00:01.000Z' };
const textNotify: Envelope = { ...notifyEnvelope('jobs q', 'plain text', 7), id: 'c3d4', at: '2024-05-01T12:00:02.000Z' };

/** Every sink's structured CloudEvent for `e`: [sink, content type, the event as JSON]. */
function everySink(e: Envelope): [string, string, unknown][] {
  const web = webhookFormatter('cloudevents')(e);
  const amqp = amqpMessage({ routingKey: '{channel}', format: 'cloudevents', persistent: true, mandatory: true, headers: {} })(e);
  const redis = redisEntry({ stream: 's', format: 'cloudevents' })(e);
  // No record key, so no `partitionkey` (the Kafka binding's own extension, compared below).
  const kafka = kafkaRecord({ topic: 't', key: null, format: 'cloudevents', cloudevents: { mode: 'structured', source: '/pg-sidekick/{channel}' } })(
    e,
  );
  return [
    ['webhook', web.contentType, JSON.parse(web.body)],
    ['amqp', String(amqp.properties.contentType), JSON.parse(amqp.content.toString('utf8'))],
    ['redis-stream', 'application/cloudevents+json; charset=utf-8', JSON.parse(String(redis[redis.indexOf('data') + 1]))],
    ['kafka', String(kafka.headers['content-type']), JSON.parse(kafka.value)],
  ];
}

const STRUCTURED = 'application/cloudevents+json; charset=utf-8';

describe('CloudEvents: one definition for every sink', () => {
  it('a row change: the same attributes, data and content type from webhook, AMQP, Redis and Kafka', () => {
    const expected = {
      specversion: '1.0',
      id: '3f9c2a1b7d4e6f80-42',
      source: '/pg-sidekick/public.orders',
      type: 'pg-sidekick.row.update',
      subject: '5',
      time: '2024-05-01T12:00:00.250Z',
      seq: '42',
      datacontenttype: 'application/json',
      data: { op: 'UPDATE', schema: 'public', table: 'orders', key: '5', new: { id: 5, status: 'paid' }, old: { id: 5, status: 'new' }, txid: '99' },
    };
    for (const [sink, contentType, event] of everySink(row)) {
      expect({ sink, contentType, event }).toEqual({ sink, contentType: STRUCTURED, event: expected });
    }
  });

  it('a NOTIFY: its JSON payload as data, or its text with datacontenttype text/plain; no subject, no seq', () => {
    for (const [sink, contentType, event] of everySink(jsonNotify)) {
      expect({ sink, contentType, event }).toEqual({
        sink,
        contentType: STRUCTURED,
        event: {
          specversion: '1.0',
          id: 'a1b2',
          source: '/pg-sidekick/jobs',
          type: 'pg-sidekick.notify',
          time: '2024-05-01T12:00:01.000Z',
          datacontenttype: 'application/json',
          data: { run: 'nightly' },
        },
      });
    }
    for (const [sink, , event] of everySink(textNotify)) {
      // `source` is a URI-reference: the channel's space is percent-encoded.
      expect({ sink, event }).toEqual({
        sink,
        event: {
          specversion: '1.0',
          id: 'c3d4',
          source: '/pg-sidekick/jobs%20q',
          type: 'pg-sidekick.notify',
          time: '2024-05-01T12:00:02.000Z',
          datacontenttype: 'text/plain',
          data: 'plain text',
        },
      });
    }
  });

  it('attribute names follow the spec: lower-case letters and digits, at most 20 characters', () => {
    for (const e of [row, jsonNotify, textNotify]) {
      for (const [, , event] of everySink(e)) {
        for (const name of Object.keys(event as object)) expect(name).toMatch(/^[a-z0-9]{1,20}$/);
      }
    }
  });

  it('Kafka binary mode carries the same attributes as ce_ headers and the data alone as the value', () => {
    const r = kafkaRecord({ topic: 't', key: '{key}', format: 'cloudevents', cloudevents: { mode: 'binary', source: '/pg-sidekick/{channel}' } })(
      row,
    );
    expect(r.headers).toMatchObject({
      ce_specversion: '1.0',
      ce_id: row.id,
      ce_source: '/pg-sidekick/public.orders',
      ce_type: 'pg-sidekick.row.update',
      ce_subject: '5',
      ce_time: row.at,
      ce_seq: '42',
      ce_partitionkey: '5',
      'content-type': 'application/json',
    });
    expect(JSON.parse(r.value)).toEqual({ op: 'UPDATE', schema: 'public', table: 'orders', key: '5', new: row.new, old: row.old, txid: '99' });
    const text = kafkaRecord({ topic: 't', key: null, format: 'cloudevents' })(textNotify);
    expect([text.value, text.headers['content-type']]).toEqual(['plain text', 'text/plain']);
  });
});
