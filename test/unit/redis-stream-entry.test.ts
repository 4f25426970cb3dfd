import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { classifyRedisError, createEntryBuilder } from '../../sinks/redis-stream/entry.js';
import { redisStreamOptions } from '../../sinks/redis-stream/options.js';
import { envelopeJson, notifyEnvelope, type Envelope } from '../../src/envelope.js';
import { FatalError, RetriableError } from '../../src/errors.js';

const row: Envelope = {
  id: '17',
  source: 'table',
  channel: 'public.orders',
  op: 'INSERT',
  schema: 'public',
  table: 'orders',
  key: '5',
  new: { id: 5 },
  old: null,
  at: '2024-05-01T12:00:00.000Z',
};

function replyError(message: string): Error {
  const e = new Error(message);
  e.name = 'ReplyError';
  return e;
}

describe('redis-stream options', () => {
  const schema = z.strictObject(redisStreamOptions);
  it('fills the documented defaults', () => {
    expect(schema.parse({ url: 'redis://h:6379' })).toEqual({
      url: 'redis://h:6379',
      options: {},
      stream: 'pg:{channel}',
      format: 'envelope',
      cloudevents: { source: '/pg-sidekick/{channel}' },
      timeout: 30_000,
    });
  });
  it('refuses the ioredis options pg-sidekick relies on, naming the key', () => {
    for (const key of ['enableOfflineQueue', 'maxRetriesPerRequest', 'autoResendUnfulfilledCommands', 'lazyConnect']) {
      const r = schema.safeParse({ url: 'redis://h', options: { [key]: true } });
      expect(r.success).toBe(false);
      expect(r.error?.issues[0]?.path).toEqual(['options', key]);
    }
    expect(schema.safeParse({ url: 'redis://h', options: { tls: {}, db: 2 } }).success).toBe(true);
  });
  it('rejects a bad URL, an unknown template field and a zero maxLen', () => {
    expect(() => schema.parse({ url: 'http://h' })).toThrow(/redis:\/\/ or rediss:\/\//);
    expect(() => schema.parse({ url: 'redis://h', stream: 'pg:{tabel}' })).toThrow(/unknown template field/);
    expect(() => schema.parse({ url: 'redis://h', maxLen: 0 })).toThrow();
  });
});

describe('redis-stream entry', () => {
  it('XADD key [MAXLEN ~ N] * id channel source op key data', () => {
    const build = createEntryBuilder({ stream: 'pg:{schema}.{table}', format: 'envelope', maxLen: 1000 });
    const args = build(row);
    expect(args.slice(0, 16)).toEqual([
      'pg:public.orders',
      'MAXLEN',
      '~',
      1000,
      '*',
      'id',
      '17',
      'channel',
      'public.orders',
      'source',
      'table',
      'op',
      'INSERT',
      'key',
      '5',
      'data',
    ]);
    expect(JSON.parse(args[16] as string)).toEqual(envelopeJson(row));
    expect(args).toHaveLength(17);
  });
  it('NOTIFY: no op or key field, no trimming unless asked; {op} in the stream template is NOTIFY', () => {
    const build = createEntryBuilder({ stream: 'pg:{channel}', format: 'payload' });
    expect(build(notifyEnvelope('jobs', 'run it', 1)).slice(0, 2)).toEqual(['pg:jobs', '*']);
    expect(build(notifyEnvelope('jobs', 'run it', 1)).slice(2)).toEqual([
      'id',
      expect.any(String),
      'channel',
      'jobs',
      'source',
      'notify',
      'data',
      'run it',
    ]);
    expect(createEntryBuilder({ stream: 'pg:{channel}:{op}', format: 'payload' })(notifyEnvelope('jobs', '', 1))[0]).toBe('pg:jobs:NOTIFY');
  });
  it('durable events: a seq field (order per key) right after the id (dedupe)', () => {
    const args = createEntryBuilder({ stream: 'pg:{channel}', format: 'payload' })({ ...row, id: '3f9c2a1b7d4e6f80-17', seq: '17' });
    expect(args.slice(1, 6)).toEqual(['*', 'id', '3f9c2a1b7d4e6f80-17', 'seq', '17']);
  });
  it('a stream template the event cannot fill is a per-event FatalError, not the stream "pg:."', () => {
    const build = createEntryBuilder({ stream: 'pg:{schema}.{table}', format: 'envelope' });
    expect(() => build(notifyEnvelope('jobs', 'x', 1))).toThrow(expect.objectContaining({ code: 'TEMPLATE_FIELD_MISSING', retriable: false }));
  });
});

describe('redis error classification', () => {
  it('WRONGTYPE, NOPERM and ERR replies are fatal', () => {
    for (const m of [
      'WRONGTYPE Operation against a key holding the wrong kind of value',
      'NOPERM this user has no permissions',
      'ERR syntax error',
    ]) {
      expect(classifyRedisError(replyError(m), 'r')).toBeInstanceOf(FatalError);
    }
  });
  it('"not now" replies (OOM, LOADING, READONLY …) are retriable and mark the server unavailable', () => {
    for (const m of ['OOM command not allowed', 'LOADING Redis is loading', "READONLY You can't write against a read only replica.", 'CLUSTERDOWN']) {
      const e = classifyRedisError(replyError(m), 'r');
      expect(e).toBeInstanceOf(RetriableError);
      expect((e as RetriableError).unavailable).toBe(true);
    }
    expect(classifyRedisError(replyError('SOMETHINGNEW happened'), 'r')).toMatchObject({ retriable: true, unavailable: false });
  });
  it('connection failures and timeouts are retriable + unavailable', () => {
    expect(classifyRedisError(new Error("Stream isn't writeable and enableOfflineQueue options is false"), 'r')).toMatchObject({
      retriable: true,
      unavailable: true,
      code: 'REDIS_UNAVAILABLE',
    });
    expect(classifyRedisError(new Error('Command timed out'), 'r')).toMatchObject({ code: 'REDIS_TIMEOUT', unavailable: true });
  });
});
