import kafkajs from 'kafkajs';
import { describe, expect, it } from 'vitest';
import { sinkDefinitions } from '../../sinks/index.js';
import { classifyKafkaError } from '../../sinks/kafka/errors.js';
import { groupRecords } from '../../sinks/kafka/sink.js';
import { CLOUDEVENTS_TYPE, createMessageBuilder, JSON_TYPE, TEXT_TYPE, type MessageOptions } from '../../sinks/kafka/message.js';
import { parseConfig } from '../../src/config.js';
import { envelopeJson, notifyEnvelope, type Envelope } from '../../src/envelope.js';
import { FatalError, RetriableError } from '../../src/errors.js';

const { KafkaJSConnectionError, KafkaJSNonRetriableError, KafkaJSNumberOfRetriesExceeded, KafkaJSProtocolError, KafkaJSRequestTimeoutError } =
  kafkajs;

// kafkajs' retrier passes { cause } too; its typings declare only the message.
const wrapNonRetriable = (e: Error) => new (KafkaJSNonRetriableError as unknown as new (e: Error, o: { cause: Error }) => Error)(e, { cause: e });

const row: Envelope = {
  id: '42',
  source: 'table',
  channel: 'public.orders',
  op: 'UPDATE',
  schema: 'public',
  table: 'orders',
  key: '7',
  new: { id: 7, status: 'paid' },
  old: { id: 7, status: 'new' },
  at: '2026-01-02T03:04:05.678Z',
  txid: '991',
  payload: undefined,
};

function parse(sink: Record<string, unknown>, env: Record<string, string> = {}) {
  return parseConfig({ sinks: { k: { type: 'kafka', ...sink } } }, { sinks: sinkDefinitions, env });
}

describe('kafka sink config', () => {
  it('takes brokers as a list or a comma string from ${ENV}, with the documented defaults', () => {
    const config = parse({ brokers: '${KAFKA_BROKERS}' }, { KAFKA_BROKERS: 'a:9092, b:9093' });
    const entry = config.sinks[0]!;
    expect(entry.options).toMatchObject({
      brokers: ['a:9092', 'b:9093'],
      clientId: 'pg-sidekick',
      topic: 'pg.{schema}.{table}',
      key: '{key}',
      format: 'envelope',
      acks: -1,
      compression: 'none',
      timeout: 30_000,
    });
    expect(entry.dispatch.batch.size).toBe(500);
    expect(parse({ brokers: ['h:1'] }).sinks[0]!.options.brokers).toEqual(['h:1']);
  });

  it('maps acks all/1/0 (numbers or strings) and accepts linger from the common batch key', () => {
    expect(parse({ brokers: 'h:1', acks: 'all' }).sinks[0]!.options.acks).toBe(-1);
    expect(parse({ brokers: 'h:1', acks: 1 }).sinks[0]!.options.acks).toBe(1);
    expect(parse({ brokers: 'h:1', acks: '0' }).sinks[0]!.options.acks).toBe(0);
    expect(parse({ brokers: 'h:1', batch: { size: 200, linger: '5ms' } }).sinks[0]!.dispatch.batch).toEqual({ size: 200, linger: 5 });
  });

  it('rejects bad brokers, unknown template fields, unknown codecs and unknown keys, naming the path', () => {
    expect(() => parse({ brokers: '' })).toThrow(/sinks\.k\.brokers: at least one broker/);
    expect(() => parse({ brokers: 'nohost' })).toThrow(/sinks\.k\.brokers: not a broker address: "nohost"/);
    expect(() => parse({ brokers: 'h:1', topic: 'pg.{tabel}' })).toThrow(/sinks\.k\.topic: unknown template field \{tabel\}/);
    expect(() => parse({ brokers: 'h:1', compression: 'snappy' })).toThrow(/sinks\.k\.compression/);
    expect(() => parse({ brokers: 'h:1', acks: 2 })).toThrow(/sinks\.k\.acks/);
    expect(() => parse({ brokers: 'h:1', partitioner: 'x' })).toThrow(/sinks\.k\.partitioner: unknown key/);
    expect(() => parse({ brokers: 'h:1', sasl: { mechanism: 'plain', username: 'u' } })).toThrow(/sinks\.k\.sasl\.password/);
  });

  it('passes ssl and sasl through', () => {
    const o = parse({
      brokers: 'h:1',
      ssl: { rejectUnauthorized: false, ca: 'PEM' },
      sasl: { mechanism: 'scram-sha-512', username: 'u', password: 'p' },
    }).sinks[0]!.options;
    expect(o.ssl).toEqual({ rejectUnauthorized: false, ca: 'PEM' });
    expect(o.sasl).toEqual({ mechanism: 'scram-sha-512', username: 'u', password: 'p' });
  });
});

describe('kafka records (topic, key, headers, value per format)', () => {
  const build = (over: Partial<MessageOptions> = {}) =>
    createMessageBuilder({ topic: 'pg.{schema}.{table}', key: '{key}', format: 'envelope', ...over });

  it('durable events: a seq header (order per key) beside the id header (dedupe)', () => {
    const r = build()({ ...row, id: '3f9c2a1b7d4e6f80-42', seq: '42' });
    expect(r.headers).toEqual({ id: '3f9c2a1b7d4e6f80-42', seq: '42', channel: 'public.orders', source: 'table', op: 'UPDATE' });
  });

  it('envelope: the envelope JSON, keyed by the row key, with id/channel/source/op headers and the event time', () => {
    const r = build()(row);
    expect(r.topic).toBe('pg.public.orders');
    expect(r.key).toBe('7');
    expect(JSON.parse(r.value)).toEqual(envelopeJson(row));
    expect(r.headers).toEqual({ id: '42', channel: 'public.orders', source: 'table', op: 'UPDATE' });
    expect(r.timestamp).toBe(String(Date.parse(row.at)));
  });

  it('keyless events are keyed by their channel; key: null sends no key', () => {
    const n = notifyEnvelope('jobs', 'hello', 1);
    expect(build({ topic: 'pg.{channel}' })(n).key).toBe('jobs');
    expect(build({ topic: 'pg.{channel}', key: null })(n).key).toBeNull();
    expect(build({ topic: 'pg.{channel}' })(n).headers).not.toHaveProperty('op');
  });

  it('payload: a NOTIFY payload byte for byte (text or JSON), a row change as its row image', () => {
    const b = build({ topic: 't', format: 'payload' });
    const text = b(notifyEnvelope('c', 'not json ✓', 1));
    expect(text.value).toBe('not json ✓');
    expect(text.headers['content-type']).toBe(TEXT_TYPE);
    const json = b(notifyEnvelope('c', '{ "a" : 1 }', 1));
    expect(json.value).toBe('{ "a" : 1 }');
    expect(json.headers['content-type']).toBe(JSON_TYPE);
    expect(JSON.parse(b(row).value)).toEqual({ id: 7, status: 'paid' });
    expect(JSON.parse(b({ ...row, op: 'DELETE', new: null }).value)).toEqual({ id: 7, status: 'new' });
  });

  // The mapping itself is the project's one CloudEvents definition (test/contract/cloudevents.test.ts).
  const data = { op: 'UPDATE', schema: 'public', table: 'orders', key: '7', new: row.new, old: row.old, txid: '991' };

  it('cloudevents binary: ce_ headers per the Kafka protocol binding, the row change as data', () => {
    const r = build({ format: 'cloudevents', cloudevents: { mode: 'binary', source: '/pg-sidekick/{channel}' } })(row);
    expect(r.headers).toMatchObject({
      ce_specversion: '1.0',
      ce_id: '42',
      ce_source: '/pg-sidekick/public.orders',
      ce_type: 'pg-sidekick.row.update',
      ce_time: row.at,
      ce_subject: '7',
      ce_partitionkey: '7',
      'content-type': JSON_TYPE,
      id: '42',
    });
    expect(JSON.parse(r.value)).toEqual(data);
  });

  it('cloudevents structured: the whole event as JSON with content-type application/cloudevents+json', () => {
    const r = build({ format: 'cloudevents', cloudevents: { mode: 'structured', source: '/db/{schema}', type: 'com.example.{table}.{op}' } })(row);
    expect(r.headers['content-type']).toBe(CLOUDEVENTS_TYPE);
    expect(Object.keys(r.headers).some((h) => h.startsWith('ce_'))).toBe(false);
    expect(JSON.parse(r.value)).toEqual({
      specversion: '1.0',
      id: '42',
      source: '/db/public',
      type: 'com.example.orders.UPDATE',
      time: row.at,
      subject: '7',
      partitionkey: '7',
      datacontenttype: JSON_TYPE,
      data,
    });
    expect(CLOUDEVENTS_TYPE).toBe('application/cloudevents+json; charset=utf-8');
    const n = build({ topic: 't', format: 'cloudevents' })(notifyEnvelope('c', 'x', 1));
    expect(n.headers.ce_type).toBe('pg-sidekick.notify');
  });

  it('an event that cannot fill the topic template, or renders an illegal topic, is a fatal error naming both', () => {
    const b = build();
    expect(() => b(notifyEnvelope('jobs', 'x', 1))).toThrow(FatalError);
    expect(() => b(notifyEnvelope('jobs', 'x', 1))).toThrow(expect.objectContaining({ code: 'TEMPLATE_FIELD_MISSING' }));
    expect(() => b(notifyEnvelope('jobs', 'x', 1))).toThrow(/topic "pg\.\{schema\}\.\{table\}" needs \{schema\}.*channel "jobs"/);
    // The key template keeps its documented fallback: rendering empty → the channel.
    expect(build({ topic: 'pg.{channel}', key: '{key}' })(notifyEnvelope('jobs', 'x', 1)).key).toBe('jobs');
    expect(() => b({ ...row, table: 'Order Items' })).toThrow(/"pg\.public\.Order Items" .* is not a valid Kafka topic name/);
  });
});

describe('kafka error classification (real kafkajs error classes)', () => {
  // kafkajs builds these from its error table; its typings only declare the message form.
  const protocol = (type: string, retriable: boolean) => new KafkaJSProtocolError({ type, code: 1, retriable, message: type } as unknown as Error);
  it("a missing topic is fatal and names the topic, even wrapped by kafkajs' retrier", () => {
    const e = classifyKafkaError(
      new KafkaJSNumberOfRetriesExceeded(protocol('UNKNOWN_TOPIC_OR_PARTITION', true), { retryCount: 0, retryTime: 1 }),
      'pg.x',
    );
    expect(e).toBeInstanceOf(FatalError);
    expect(e.code).toBe('KAFKA_TOPIC_MISSING');
    expect(e.message).toBe('topic "pg.x" does not exist; create it first (pg-sidekick never relies on topic auto-creation)');
  });
  it('connection errors and leaderless partitions are retriable and mark the destination unavailable', () => {
    for (const raw of [
      // What kafkajs threw in a measured broker outage: NonRetriable(ConnectionError ECONNREFUSED).
      wrapNonRetriable(new KafkaJSConnectionError('Connection error: connect ECONNREFUSED', { code: 'ECONNREFUSED' } as never)),
      new KafkaJSNumberOfRetriesExceeded(new KafkaJSRequestTimeoutError('Request timed out'), { retryCount: 0, retryTime: 1 }),
      protocol('LEADER_NOT_AVAILABLE', true),
      protocol('NOT_ENOUGH_REPLICAS', true),
    ]) {
      const e = classifyKafkaError(raw, 't');
      expect(e, raw.message).toBeInstanceOf(RetriableError);
      expect((e as RetriableError).unavailable, raw.message).toBe(true);
    }
  });
  it('other retriable protocol errors stay retriable (counted attempts); non-retriable ones are fatal', () => {
    const moved = classifyKafkaError(
      new KafkaJSNumberOfRetriesExceeded(protocol('NOT_LEADER_FOR_PARTITION', true), { retryCount: 0, retryTime: 1 }),
      't',
    );
    expect(moved).toBeInstanceOf(RetriableError);
    expect((moved as RetriableError).unavailable).toBe(false);
    expect(moved.code).toBe('KAFKA_NOT_LEADER_FOR_PARTITION');
    expect(classifyKafkaError(protocol('MESSAGE_TOO_LARGE', false), 't').code).toBe('KAFKA_RECORD_TOO_LARGE');
    expect(classifyKafkaError(protocol('INVALID_RECORD', false), 't')).toBeInstanceOf(FatalError);
    expect(classifyKafkaError(new KafkaJSNonRetriableError('Invalid message without value'), 't')).toBeInstanceOf(FatalError);
    expect(classifyKafkaError(new TypeError('boom'), 't').code).toBe('SINK_BUG');
  });
});

describe('kafka produce requests (grouping)', () => {
  const rec = (topic: string, bytes = 10) => ({ topic, key: 'k', value: 'x'.repeat(bytes), headers: {} });
  it('one request per topic, records in batch order, indexes pointing back into the batch', () => {
    const groups = groupRecords([rec('a'), rec('b'), undefined, rec('a')]);
    expect(groups.map((t) => t.map((g) => [g.topic, g.indexes]))).toEqual([[['a', [0, 3]]], [['b', [1]]]]);
  });
  it("cuts a topic's records into requests of at most maxBytes; a record larger than that goes alone", () => {
    const groups = groupRecords([rec('a', 400), rec('a', 400), rec('a', 400), rec('a', 5000), rec('a', 10)], 1000);
    expect(groups.map((t) => t.map((g) => g.indexes))).toEqual([[[0, 1], [2], [3], [4]]]);
  });
});
