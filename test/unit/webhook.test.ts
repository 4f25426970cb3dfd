import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { sinkDefinitions } from '../../sinks/index.js';
import { createFormatter, payloadIsJson } from '../../sinks/webhook/formats.js';
import { webhookOptions } from '../../sinks/webhook/options.js';
import { networkError, statusOutcome } from '../../sinks/webhook/outcome.js';
import { parseRetryAfter } from '../../sinks/webhook/retry-after.js';
import { createSigner, secretKey } from '../../sinks/webhook/signing.js';
import { compileUrl } from '../../sinks/webhook/url.js';
import { parseConfig } from '../../src/config.js';
import { notifyEnvelope, type Envelope } from '../../src/envelope.js';
import { ConfigError, RetriableError } from '../../src/errors.js';

const row = (over: Partial<Envelope> = {}): Envelope => ({
  id: '42',
  source: 'table',
  channel: 'public.test_table',
  op: 'INSERT',
  schema: 'public',
  table: 'test_table',
  key: '1',
  new: { id: 1, name: 'abc1' },
  old: null,
  at: '2024-05-01T10:00:00.000Z',
  txid: '777',
  payload: undefined,
  ...over,
});

describe('webhook: Retry-After', () => {
  const now = Date.parse('2024-05-01T10:00:00Z');
  it('reads seconds and HTTP dates, ignores junk', () => {
    expect(parseRetryAfter('1', now)).toBe(1000);
    expect(parseRetryAfter(' 120 ', now)).toBe(120_000);
    expect(parseRetryAfter('0', now)).toBe(0);
    expect(parseRetryAfter('Wed, 01 May 2024 10:00:30 GMT', now)).toBe(30_000);
    expect(parseRetryAfter('Wed, 01 May 2024 09:00:00 GMT', now)).toBe(0); // in the past: no wait
    expect(parseRetryAfter(['5', '9'], now)).toBe(5000);
    for (const junk of [undefined, '', 'soon', '-3', '1.5', '12abc']) expect(parseRetryAfter(junk, now)).toBeUndefined();
  });
});

describe('webhook: Standard Webhooks signing', () => {
  it('reproduces the published Standard Webhooks test vector', () => {
    const sign = createSigner(['whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw']);
    expect(sign('msg_p5jXN8AQM9LWM0D4loKWxJek', 1614265330, '{"test": 2432232314}')).toBe('v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=');
  });
  it('signs once per secret, space-separated (rotation); raw secrets are their UTF-8 bytes', () => {
    const both = createSigner(['whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'plain secret']);
    const parts = both('id', 1, 'b').split(' ');
    expect(parts).toHaveLength(2);
    expect(parts[0]).toBe(createSigner(['whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'])('id', 1, 'b'));
    expect(parts[1]).toBe(createSigner(['plain secret'])('id', 1, 'b'));
    expect(secretKey('plain secret').toString()).toBe('plain secret');
  });
  it('rejects a whsec_ secret that is not base64, without echoing it', () => {
    expect(() => secretKey('whsec_not*base64!')).toThrow(/base64/);
    try {
      secretKey('whsec_not*base64!');
    } catch (e) {
      expect((e as Error).message).not.toContain('not*base64');
    }
  });
});

describe('webhook: URL templates', () => {
  it('fills placeholders URL-encoded, keeps the origin fixed', () => {
    const u = compileUrl('https://example.com/hooks/{schema}/{table}?key={key}');
    expect(u.origin).toBe('https://example.com');
    expect(u.path(row({ key: 'a/b?c&d' }))).toBe('/hooks/public/test_table?key=a%2Fb%3Fc%26d');
    expect(u.display).toBe('https://example.com/hooks/{schema}/{table}');
    expect(compileUrl('http://h:8080').path(row())).toBe('/');
  });
  it('turns credentials in the URL into Basic auth and keeps them out of the display form', () => {
    const u = compileUrl('https://user:p%40ss@example.com/x?token=secret');
    expect(u.basicAuth).toBe(`Basic ${Buffer.from('user:p@ss').toString('base64')}`);
    expect(u.display).toBe('https://example.com/x');
  });
  it('a field the event lacks fails that event (TEMPLATE_FIELD_MISSING) instead of posting to …//', () => {
    const u = compileUrl('https://example.com/hooks/{schema}/{table}');
    expect(() => u.path(notifyEnvelope('jobs', '{}', 1))).toThrow(expect.objectContaining({ code: 'TEMPLATE_FIELD_MISSING', retriable: false }));
    expect(() => u.path(notifyEnvelope('jobs', '{}', 1))).toThrow(
      /url "\/hooks\/\{schema\}\/\{table\}" needs \{schema\}, which this notify event on channel "jobs" does not have/,
    );
    // {op} is filled for every event: the row op, else the source in capitals.
    expect(compileUrl('https://example.com/{channel}/{op}').path(notifyEnvelope('jobs', '{}', 1))).toBe('/jobs/NOTIFY');
  });
  it('refuses placeholders in the host, unknown fields and non-http URLs', () => {
    expect(() => compileUrl('https://{table}.example.com/')).toThrow(/host/);
    expect(() => compileUrl('https://example.com/{nope}')).toThrow(/unknown template field \{nope\}/);
    expect(() => compileUrl('ftp://example.com/')).toThrow(/http/);
  });
});

describe('webhook: formats', () => {
  it('skor: {table, schema, op, data} with data = new, or old for DELETE', () => {
    const skor = createFormatter('skor');
    expect(JSON.parse(skor(row()).body)).toEqual({ table: 'test_table', schema: 'public', op: 'INSERT', data: { id: 1, name: 'abc1' } });
    expect(Object.keys(JSON.parse(skor(row()).body))).toEqual(['table', 'schema', 'op', 'data']);
    const del = row({ op: 'DELETE', new: null, old: { id: 1, name: 'pqr1' } });
    expect(JSON.parse(skor(del).body)).toEqual({ table: 'test_table', schema: 'public', op: 'DELETE', data: { id: 1, name: 'pqr1' } });
    expect(skor(row()).contentType).toBe('application/json');
  });
  it("skor: a notification (e.g. from skor's own triggers) is passed through byte for byte", () => {
    const raw = '{"table" : "t", "schema" : "public", "op" : "INSERT", "data" : {"id":1}}';
    expect(createFormatter('skor')(notifyEnvelope('skor', raw, 1))).toEqual({ body: raw, contentType: 'application/json' });
  });
  it('payload: the raw text; JSON content type only when it parses', () => {
    const payload = createFormatter('payload');
    expect(payload(notifyEnvelope('c', ' {"a": 1} ', 1))).toEqual({ body: ' {"a": 1} ', contentType: 'application/json' });
    expect(payload(notifyEnvelope('c', '"quoted"', 1)).contentType).toBe('application/json');
    expect(payload(notifyEnvelope('c', 'hello', 1))).toEqual({ body: 'hello', contentType: 'text/plain; charset=utf-8' });
    expect(payloadIsJson(notifyEnvelope('c', '', 1))).toBe(false);
    expect(JSON.parse(payload(row()).body)).toEqual({ id: 1, name: 'abc1' });
  });
  it('cloudevents: the one CloudEvents mapping of every sink (test/contract/cloudevents.test.ts), structured', () => {
    const ce = createFormatter('cloudevents');
    const out = ce(row({ op: 'UPDATE', seq: '42', old: { id: 1, name: 'abc1' }, new: { id: 1, name: 'pqr1' } }));
    expect(out.contentType).toBe('application/cloudevents+json; charset=utf-8');
    expect(JSON.parse(out.body)).toEqual({
      specversion: '1.0',
      id: '42',
      source: '/pg-sidekick/public.test_table',
      type: 'pg-sidekick.row.update',
      subject: '1',
      time: '2024-05-01T10:00:00.000Z',
      seq: '42',
      datacontenttype: 'application/json',
      data: {
        op: 'UPDATE',
        schema: 'public',
        table: 'test_table',
        key: '1',
        new: { id: 1, name: 'pqr1' },
        old: { id: 1, name: 'abc1' },
        txid: '777',
      },
    });
    const text = JSON.parse(ce(notifyEnvelope('jobs q', 'plain', 1)).body);
    expect(text).toMatchObject({ type: 'pg-sidekick.notify', source: '/pg-sidekick/jobs%20q', datacontenttype: 'text/plain', data: 'plain' });
    expect(text.subject).toBeUndefined();
    expect(text.seq).toBeUndefined();
    const custom = createFormatter('cloudevents', { cloudEvents: { source: 'urn:db:{channel}', type: 'com.example.{channel}' } });
    expect(JSON.parse(custom(notifyEnvelope('x', '{}', 1)).body)).toMatchObject({ source: 'urn:db:x', type: 'com.example.x' });
  });
});

describe('webhook: outcomes', () => {
  it('2xx ok; 408/425/429/5xx retriable with Retry-After; 3xx and other 4xx fatal with status and body', () => {
    expect(statusOutcome(204, {}, '', 'POST u').ok).toBe(true);
    for (const s of [408, 425, 429, 500, 502, 503, 504]) {
      const o = statusOutcome(s, { 'retry-after': '3' }, 'busy', 'POST u');
      expect(o.ok).toBe(false);
      if (!o.ok) {
        expect(o.error).toBeInstanceOf(RetriableError);
        expect((o.error as RetriableError).retryAfterMs).toBe(3000);
        expect(o.error.code).toBe(`HTTP_${s}`);
      }
    }
    for (const s of [400, 401, 403, 404, 409, 410, 422, 301, 302, 307]) {
      const o = statusOutcome(s, { location: '/x?token=1' }, 'nope', 'POST u');
      expect(o.ok === false && !o.error.retriable, `status ${s}`).toBe(true);
      if (!o.ok) {
        expect(o.error.message).toContain(`HTTP ${s}`);
        expect(o.error.message).not.toContain('token=1');
      }
    }
  });
  it('refused / unresolvable / connect timeout = unavailable; read timeouts and resets count as attempts', () => {
    const refused = networkError(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:9'), { code: 'ECONNREFUSED' }), 'POST u');
    expect(refused).toMatchObject({ retriable: true, unavailable: true, code: 'ECONNREFUSED' });
    const agg = networkError(Object.assign(new AggregateError([Object.assign(new Error('x'), { code: 'ECONNREFUSED' })]), {}), 'POST u');
    expect(agg).toMatchObject({ unavailable: true });
    expect(networkError(Object.assign(new Error('t'), { code: 'UND_ERR_HEADERS_TIMEOUT' }), 'POST u')).toMatchObject({
      code: 'HTTP_TIMEOUT',
      unavailable: false,
      retriable: true,
    });
    expect(networkError(Object.assign(new Error('r'), { code: 'ECONNRESET' }), 'POST u')).toMatchObject({ retriable: true, unavailable: false });
    expect(networkError(Object.assign(new Error('bad header'), { code: 'UND_ERR_INVALID_ARG' }), 'POST u')).toMatchObject({ retriable: false });
  });
});

describe('webhook: config', () => {
  const parse = (sink: Record<string, unknown>) =>
    parseConfig({ sinks: { hook: { type: 'webhook', ...sink } } }, { sinks: sinkDefinitions, env: { TOKEN: 't0k3n' } });
  it('applies the documented defaults (concurrency 32, one event per request, 10s timeouts, POST, envelope)', () => {
    const entry = parse({ url: 'http://127.0.0.1/h' }).sinks[0]!;
    expect(entry.dispatch.concurrency).toBe(32);
    expect(entry.dispatch.batch.size).toBe(1);
    expect(entry.options).toMatchObject({
      method: 'POST',
      format: 'envelope',
      followRedirects: false,
      proxy: 'env',
      headers: {},
      timeout: { connect: 10_000, headers: 10_000, body: 10_000 },
    });
  });
  it("accepts the issue's example config", () => {
    const entry = parse({
      url: 'https://example.com/hooks/{schema}/{table}',
      method: 'POST',
      headers: { Authorization: 'Bearer ${TOKEN}' },
      format: 'envelope',
      secret: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
      timeout: '10s',
      concurrency: 32,
      retry: { attempts: 10, initialDelay: '500ms', maxDelay: '5m', maxAge: '24h' },
    }).sinks[0]!;
    expect(entry.options.headers).toEqual({ Authorization: 'Bearer t0k3n' });
    expect(entry.options.secret).toEqual(['whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw']);
    expect(entry.dispatch.retry).toEqual({ attempts: 10, initialDelay: 500, maxDelay: 300_000, maxAge: 86_400_000 });
    expect(parse({ url: 'http://h/', timeout: { connect: '2s' } }).sinks[0]!.options.timeout).toEqual({
      connect: 2000,
      headers: 10_000,
      body: 10_000,
    });
  });
  it('names the key of every mistake, never the secret', () => {
    const bad = () =>
      parse({ url: 'https://{table}.x/', format: 'xml', secret: 'whsec_!!', headers: { 'webhook-id': 'x' }, proxy: 'socks', colour: 1 });
    expect(bad).toThrow(ConfigError);
    try {
      bad();
    } catch (e) {
      const m = (e as Error).message;
      for (const key of [
        'sinks.hook.url',
        'sinks.hook.format',
        'sinks.hook.secret',
        'sinks.hook.headers',
        'sinks.hook.proxy',
        'sinks.hook.colour: unknown key',
      ])
        expect(m).toContain(key);
      expect(m).not.toContain('whsec_!!');
    }
  });
  it('is registered in sinks/index.ts', () => {
    expect(sinkDefinitions.map((d) => d.type)).toContain('webhook');
    expect(() => z.strictObject(webhookOptions).parse({})).toThrow();
  });
});

describe('webhook: an event that cannot become a request', () => {
  it('a URL template the event cannot fill: dead-lettered with the reason, nothing sent', async () => {
    const { webhookSink } = await import('../../sinks/webhook/index.js');
    const { contractContext } = await import('../contract/sink-contract.js');
    // Port 9 (discard) is never contacted: the request is refused before it is made.
    const sink = webhookSink.create(
      z.strictObject(webhookOptions).parse({ url: 'http://127.0.0.1:9/in/{schema}/{table}', proxy: 'none' }),
      contractContext('h'),
    );
    const [bad] = await sink.send([notifyEnvelope('jobs', '{}', 1)], new AbortController().signal);
    expect(bad).toMatchObject({ ok: false, error: { code: 'TEMPLATE_FIELD_MISSING', retriable: false } });
    expect(bad!.ok === false && bad!.error.message).toMatch(/needs \{schema\}/);
    await sink.stop();
  });
  it('is fatal for that event only (a key that cannot be URL-encoded)', async () => {
    const { webhookSink } = await import('../../sinks/webhook/index.js');
    const { contractContext } = await import('../contract/sink-contract.js');
    // The request is never made (the URL cannot be built), so no server is involved.
    const sink = webhookSink.create(z.strictObject(webhookOptions).parse({ url: 'http://127.0.0.1:9/x/{key}', proxy: 'none' }), contractContext('h'));
    const [bad] = await sink.send([row({ key: 'lone \ud800 surrogate' })], new AbortController().signal);
    expect(bad).toMatchObject({ ok: false, error: { code: 'WEBHOOK_FORMAT', retriable: false } });
    await sink.stop();
  });
});
