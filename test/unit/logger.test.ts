import { PassThrough } from 'node:stream';
import { z } from 'zod';
import { describe, expect, it } from 'vitest';
import { sinkDefinitions } from '../../sinks/index.js';
import { loggerFor, configSummary } from '../../src/commands/run.js';
import { parseConfig } from '../../src/config.js';
import { ConfigError } from '../../src/errors.js';
import { chooseLogFormat, createLogger, redactLine, redactUrl } from '../../src/logger.js';
import { defineSink } from '../../src/sink.js';

function capture() {
  const stream = new PassThrough();
  let text = '';
  stream.on('data', (c: Buffer) => {
    text += c.toString();
  });
  return { stream, text: () => text };
}

// A stand-in with the option shapes of the webhook and Kafka sinks (being written elsewhere):
// only its config shape matters here, nothing is sent.
const fakeWebhook = defineSink({
  type: 'fake-webhook',
  description: 'test double with secret-bearing options',
  options: {
    url: z.string(),
    headers: z.record(z.string(), z.string()).default({}),
    secret: z.union([z.string(), z.array(z.string())]).optional(),
    sasl: z.object({ mechanism: z.string(), username: z.string(), password: z.string() }).optional(),
  },
  create() {
    throw new Error('not used');
  },
});

describe('logger: secrets never reach a line', () => {
  it('removes headers.Authorization, signing secrets, SASL passwords and URL passwords from the effective-config line', () => {
    const config = parseConfig(
      {
        database: 'postgres://app:hunter2-db@db.internal:5432/app',
        sinks: {
          hook: {
            type: 'fake-webhook',
            url: 'https://bob:hunter2-url@hooks.example.com/in',
            headers: { Authorization: 'Bearer hunter2-bearer', 'X-Api-Key': 'hunter2-apikey', Accept: 'application/json' },
            secret: ['whsec_hunter2-one', 'whsec_hunter2-two'],
            sasl: { mechanism: 'plain', username: 'svc', password: 'hunter2-sasl' },
          },
        },
      },
      { file: 'x.yaml', env: {}, sinks: [...sinkDefinitions, fakeWebhook] },
    );
    const out = capture();
    const logger = createLogger({ level: 'debug', destination: out.stream });
    logger.debug({ effective: configSummary(config) }, 'effective config');
    const line = out.text();
    expect(line).not.toMatch(/hunter2/);
    const parsed = JSON.parse(line) as { effective: { database: string; sinks: { hook: Record<string, unknown> } } };
    // What is not secret stays readable.
    expect(parsed.effective.database).toBe('postgres://app:[redacted]@db.internal:5432/app');
    expect(parsed.effective.sinks.hook).toMatchObject({
      url: 'https://bob:[redacted]@hooks.example.com/in',
      headers: { Authorization: '[redacted]', 'X-Api-Key': '[redacted]', Accept: 'application/json' },
      secret: '[redacted]',
      sasl: { mechanism: 'plain', username: 'svc', password: '[redacted]' },
    });
  });

  it('also redacts child bindings, messages, error stacks and conninfo passwords', () => {
    const out = capture();
    const logger = createLogger({ level: 'info', destination: out.stream });
    const child = logger.child({ sink: 'x', options: { headers: { authorization: 'Basic hunter2-child' } } });
    child.info('connecting to postgres://u:hunter2-msg@h/db');
    child.error({ err: new Error('failed for amqp://guest:hunter2-err@rabbit:5672') }, 'boom');
    logger.warn({ database: 'host=db password=hunter2-conninfo dbname=app' }, 'conninfo');
    logger.info({ token: 12345, hookSecret: 'hunter2-camel', apiKey: null, key: 'order-7' }, 'odd shapes');
    const text = out.text();
    expect(text).not.toMatch(/hunter2|12345/);
    expect(text).toContain('"key":"order-7"'); // an envelope's ordering key is not a secret
    expect(text.trim().split('\n')).toHaveLength(4);
    for (const l of text.trim().split('\n')) JSON.parse(l); // still valid JSON
  });

  it('redactLine leaves ordinary lines alone', () => {
    const line = '{"level":30,"msg":"delivered","sink":"kafka","id":"42","channel":"public.orders","url":"https://example.com/a@b"}';
    expect(redactLine(line)).toBe(line);
  });
});

// Issue 16 item 8: the webhook URL's ?token=… was in the debug "effective config" line. No URL's
// userinfo or query string reaches a log line, at any level, from any option or error message.
describe('logger: URL userinfo and query strings never reach a line', () => {
  it('the effective config at debug: webhook, database, AMQP, Redis and Kafka URLs', () => {
    const config = parseConfig(
      {
        database: 'postgres://app:hunter2-dbpw@db.internal:5432/app?sslmode=require&sslpassword=hunter2-sslpw',
        sinks: {
          hook: { type: 'webhook', url: 'https://hooks.example.com/in/{channel}?token=hunter2-token&v=1' },
          bare: { type: 'webhook', url: 'https://hunter2-usertoken@hooks.example.com/in' },
          rabbit: { type: 'amqp', url: 'amqp://svc:hunter2-amqp@rabbit:5672/vhost?heartbeat=30&auth=hunter2-amqpq' },
          redis: { type: 'redis-stream', url: 'redis://:hunter2-redis@redis:6379/0?password=hunter2-redisq' },
          kafka: { type: 'kafka', brokers: ['kafka-1:9092', 'kafka-2:9092'] },
        },
      },
      { file: 'x.yaml', env: {}, sinks: sinkDefinitions },
    );
    const out = capture();
    const logger = createLogger({ level: 'debug', destination: out.stream });
    logger.debug({ effective: configSummary(config) }, 'effective config');
    const line = out.text();
    expect(line).toContain('effective config');
    expect(line).not.toMatch(/hunter2/);
    const parsed = JSON.parse(line) as { effective: { database: string; sinks: Record<string, { url?: string; brokers?: string[] }> } };
    // What is not secret stays readable: scheme, user, host, port, path.
    expect(parsed.effective.database).toBe('postgres://app:[redacted]@db.internal:5432/app?[redacted]');
    expect(parsed.effective.sinks.hook?.url).toBe('https://hooks.example.com/in/{channel}?[redacted]');
    expect(parsed.effective.sinks.bare?.url).toBe('https://[redacted]@hooks.example.com/in');
    expect(parsed.effective.sinks.rabbit?.url).toBe('amqp://svc:[redacted]@rabbit:5672/vhost?[redacted]');
    expect(parsed.effective.sinks.redis?.url).toBe('redis://:[redacted]@redis:6379/0?[redacted]');
    expect(parsed.effective.sinks.kafka?.brokers).toEqual(['kafka-1:9092', 'kafka-2:9092']);
  });

  it('in messages and error messages, at every level, pretty or JSON', () => {
    for (const format of ['json', 'pretty'] as const) {
      const out = capture();
      const logger = createLogger({ level: 'trace', format, destination: out.stream });
      logger.trace('GET https://h.example.com/x?token=hunter2-trace');
      logger.error({ err: new Error('request to https://h.example.com/x?api_key=hunter2-err failed, reason: "reset"') }, 'delivery failed');
      logger.fatal({ target: 'https://hunter2-tok@h.example.com/x#hunter2-frag' }, 'target');
      const text = out.text();
      expect(text).not.toMatch(/hunter2/);
      expect(text).toContain('https://h.example.com/x?[redacted]');
      if (format === 'json') for (const l of text.trim().split('\n')) JSON.parse(l);
    }
  });

  it('redactUrl, for messages that name a broker: user, host and path stay', () => {
    expect(redactUrl('amqp://guest:guest@127.0.0.1:5672/?heartbeat=30')).toBe('amqp://guest:[redacted]@127.0.0.1:5672/?[redacted]');
    expect(redactUrl('redis://tok3n@redis:6379')).toBe('redis://[redacted]@redis:6379');
    expect(redactUrl('redis://redis:6379/0')).toBe('redis://redis:6379/0');
  });
});

describe('logger: format and level', () => {
  it('is pretty on a terminal unless told otherwise, JSON everywhere else', () => {
    expect(chooseLogFormat(undefined, undefined, true)).toBe('pretty');
    expect(chooseLogFormat(undefined, undefined, false)).toBe('json');
    expect(chooseLogFormat(undefined, 'json', true)).toBe('json');
    expect(chooseLogFormat(undefined, 'pretty', false)).toBe('pretty');
    expect(chooseLogFormat('json', 'pretty', true)).toBe('json');
    expect(chooseLogFormat('auto', 'json', true)).toBe('pretty');
  });

  it('writes readable lines in pretty mode, still without secrets', () => {
    const out = capture();
    const logger = createLogger({ level: 'info', format: 'pretty', destination: out.stream });
    logger.info({ sink: 'hook', headers: { Authorization: 'Bearer hunter2' } }, 'sink started');
    const text = out.text();
    expect(text).toMatch(/^\[[\d:.]+\] INFO: sink started \{"sink":"hook","headers":\{"Authorization":"\[redacted\]"\}\}\n$/);
    expect(text).not.toMatch(/hunter2/);
    expect(() => JSON.parse(text)).toThrow();
  });

  it('takes the level from the config, else LOG_LEVEL, and rejects an unknown LOG_LEVEL', () => {
    const stderr = capture().stream;
    const config = parseConfig({ sinks: {}, log: { level: 'warn' } }, { env: {}, sinks: sinkDefinitions });
    expect(loggerFor(config, { env: { LOG_LEVEL: 'debug' }, stderr }).level).toBe('warn');
    expect(loggerFor(undefined, { env: { LOG_LEVEL: 'debug' }, stderr }).level).toBe('debug');
    expect(loggerFor(undefined, { env: {}, stderr }).level).toBe('info');
    expect(() => loggerFor(undefined, { env: { LOG_LEVEL: 'verbose' }, stderr })).toThrow(ConfigError);
  });
});
