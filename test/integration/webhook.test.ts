import { execFileSync } from 'node:child_process';
import { createHmac, timingSafeEqual } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect as netConnect, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { webhookSink } from '../../sinks/webhook/index.js';
import { webhookOptions } from '../../sinks/webhook/options.js';
import type { DispatchOptions } from '../../src/config.js';
import { createDispatcher, type Delivery } from '../../src/dispatcher/index.js';
import { notifyEnvelope, type Envelope } from '../../src/envelope.js';
import { RetriableError, type SidekickError } from '../../src/errors.js';
import { createLogger } from '../../src/logger.js';
import type { Sink } from '../../src/sink.js';
import { contractContext, quietLogger, sinkContract, testEnvelope } from '../contract/sink-contract.js';
import { startReceiver, type Receiver } from './webhook-receiver.js';

// Every test here talks to a real HTTP server on 127.0.0.1 (node:http), over TCP, through undici.

const schema = z.strictObject(webhookOptions);
const receivers: Receiver[] = [];
const sinks: Sink[] = [];
const servers: Server[] = [];

async function receiver(...args: Parameters<typeof startReceiver>): Promise<Receiver> {
  const r = await startReceiver(...args);
  receivers.push(r);
  return r;
}

function sink(options: Record<string, unknown>, logger = quietLogger): Sink {
  const s = webhookSink.create(schema.parse(options), contractContext('hook', { logger }));
  sinks.push(s);
  return s;
}

function dispatch(s: Sink, over: Partial<DispatchOptions> = {}) {
  return createDispatcher({
    sink: s,
    logger: quietLogger,
    options: { retry: { attempts: 5, initialDelay: 20, maxDelay: 500 }, concurrency: 32, batch: { size: 1, linger: 0 }, maxQueued: 10_000, ...over },
  });
}

async function sendOne(s: Sink, e: Envelope) {
  const [outcome] = await s.send([e], new AbortController().signal);
  return outcome!;
}

afterEach(async () => {
  await Promise.all(sinks.splice(0).map((s) => s.stop()));
  await Promise.all(receivers.splice(0).map((r) => r.close()));
  await Promise.all(
    servers.splice(0).map(
      (s) =>
        new Promise((r) => {
          s.closeAllConnections();
          s.close(r);
        }),
    ),
  );
});

/**
 * An independent Standard Webhooks verifier, written from the spec (not from our signing module):
 * signed content `${id}.${timestamp}.${body}`, HMAC-SHA256, base64; `whsec_` secrets are base64;
 * the header holds space-separated `v1,<sig>` entries, any of which may match; timestamps older or
 * newer than the tolerance are rejected.
 */
function verifyStandardWebhook(secret: string, headers: IncomingHttpHeaders, body: string, toleranceSeconds = 300): boolean {
  const id = headers['webhook-id'];
  const timestamp = headers['webhook-timestamp'];
  const signatures = headers['webhook-signature'];
  if (typeof id !== 'string' || typeof timestamp !== 'string' || typeof signatures !== 'string') return false;
  if (!/^\d+$/.test(timestamp) || Math.abs(Date.now() / 1000 - Number(timestamp)) > toleranceSeconds) return false;
  const key = secret.startsWith('whsec_') ? Buffer.from(secret.slice('whsec_'.length), 'base64') : Buffer.from(secret, 'utf8');
  const expected = createHmac('sha256', key).update(`${id}.${timestamp}.${body}`).digest();
  return signatures.split(' ').some((entry) => {
    const [version, signature] = entry.split(',');
    if (version !== 'v1' || !signature) return false;
    const given = Buffer.from(signature, 'base64');
    return given.length === expected.length && timingSafeEqual(given, expected);
  });
}

describe('webhook sink against a real HTTP server', () => {
  it('POSTs the envelope JSON with webhook-id, webhook-timestamp, content type and configured headers; reuses connections', async () => {
    const r = await receiver();
    const s = sink({ url: `${r.url}/hooks/{schema}/{table}?key={key}`, headers: { Authorization: 'Bearer abc', 'X-Extra': '1' } });
    const batch = Array.from({ length: 20 }, (_, i) => testEnvelope({ key: `k/${i}` }));
    for (const e of batch) expect(await sendOne(s, e)).toEqual({ ok: true });
    expect(r.requests).toHaveLength(20);
    const first = r.requests[0]!;
    expect(first.method).toBe('POST');
    expect(first.path).toBe('/hooks/public/contract?key=k%2F0');
    expect(first.headers['content-type']).toBe('application/json');
    expect(first.headers['webhook-id']).toBe(batch[0]!.id);
    expect(Math.abs(Number(first.headers['webhook-timestamp']) - Date.now() / 1000)).toBeLessThan(5);
    expect(first.headers['webhook-signature']).toBeUndefined();
    expect(first.headers['webhook-seq']).toBeUndefined(); // not a durable event: no outbox number
    expect(first.headers.authorization).toBe('Bearer abc');
    expect(first.headers['x-extra']).toBe('1');
    expect(first.headers['user-agent']).toMatch(/^pg-sidekick\//);
    expect(JSON.parse(first.body)).toMatchObject({ id: batch[0]!.id, source: 'table', op: 'INSERT', new: { note: 'ünïcode ✓' } });
    // Keep-alive: a connection or two carried all twenty sequential requests (undici may open a
    // second one while the first is still being released).
    expect(r.connections).toBeLessThanOrEqual(2);
  });

  it('a durable event carries its outbox number in webhook-seq beside webhook-id; the envelope body has it too', async () => {
    const r = await receiver();
    const s = sink({ url: r.url, secret: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw' });
    const e = testEnvelope({ id: '3f9c2a1b7d4e6f80-42', seq: '42' });
    expect(await sendOne(s, e)).toEqual({ ok: true });
    const [q] = r.requests;
    expect([q!.headers['webhook-id'], q!.headers['webhook-seq']]).toEqual(['3f9c2a1b7d4e6f80-42', '42']);
    expect(JSON.parse(q!.body)).toMatchObject({ id: '3f9c2a1b7d4e6f80-42', seq: '42' });
    expect(verifyStandardWebhook('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', q!.headers, q!.body)).toBe(true);
    expect(() => schema.parse({ url: r.url, headers: { 'Webhook-Seq': '1' } })).toThrow(/set by the sink/);
  });

  it('a URL template a NOTIFY cannot fill: dead-lettered with the reason, never posted to …//', async () => {
    const r = await receiver();
    const d = dispatch(sink({ url: `${r.url}/in/{schema}/{table}` }));
    const result = await d.deliver(notifyEnvelope('jobs', '{"run":1}', 1));
    expect(result).toMatchObject({ status: 'dead', attempts: 1, error: { code: 'TEMPLATE_FIELD_MISSING' } });
    expect((result as { error: SidekickError }).error.message).toMatch(/url "\/in\/\{schema\}\/\{table\}" needs \{schema\}/);
    expect(r.requests).toHaveLength(0);
    // The row changes routed there still go through.
    expect(await d.deliver(testEnvelope())).toEqual({ status: 'delivered', attempts: 1 });
    expect(r.requests.map((q) => q.path)).toEqual(['/in/public/contract']);
    await d.stop(1000);
  });

  it('reads and discards response bodies (2xx and errors), so connections stay reusable', async () => {
    // Larger than undici's stream buffer: an unread body would hold its connection.
    const r = await receiver((_req, i) => ({ status: i % 2 === 0 ? 200 : 503, body: 'x'.repeat(i % 2 === 0 ? 100_000 : 50_000) }));
    const s = sink({ url: r.url });
    for (let i = 0; i < 10; i++) await sendOne(s, testEnvelope());
    expect(r.requests).toHaveLength(10);
    expect(r.connections).toBeLessThanOrEqual(2);
  });

  it('a receiver failing twice per event: each event delivered exactly once successfully, in per-key order', async () => {
    const seen = new Map<string, number>();
    const r = await receiver((req) => {
      const id = req.headers['webhook-id'] as string;
      const n = (seen.get(id) ?? 0) + 1;
      seen.set(id, n);
      return n <= 2 ? { status: 500, body: 'try again' } : { status: 204 };
    });
    const d = dispatch(sink({ url: r.url }), { retry: { attempts: 5, initialDelay: 10, maxDelay: 100 } });
    const events = Array.from({ length: 30 }, (_, i) => testEnvelope({ key: `k${i % 3}`, new: { seq: i } }));
    const results = await Promise.all(events.map((e) => d.deliver(e)));
    expect(results.every((x) => x.status === 'delivered' && x.attempts === 3)).toBe(true);
    const successes = r.requests.filter((q) => (seen.get(q.headers['webhook-id'] as string) ?? 0) >= 3);
    // exactly one successful request per event: the third one
    const okIds = r.requests
      .filter((_q, i) => {
        const id = r.requests[i]!.headers['webhook-id'] as string;
        return r.requests.slice(0, i + 1).filter((p) => p.headers['webhook-id'] === id).length === 3;
      })
      .map((q) => q.headers['webhook-id']);
    expect(new Set(okIds).size).toBe(30);
    expect(okIds).toHaveLength(30);
    expect(successes.length).toBe(90);
    // every attempt of one event carried the same webhook-id, and per key the successes are in order
    for (let k = 0; k < 3; k++) {
      const order = okIds
        .map((id) => events.find((e) => e.id === id)!)
        .filter((e) => e.key === `k${k}`)
        .map((e) => (e.new as { seq: number }).seq);
      expect(order).toEqual([...order].sort((a, b) => a - b));
      expect(order).toHaveLength(10);
    }
    await d.stop(1000);
  });

  it("a receiver failing each event's first two attempts, one key per event: retries are not starved by the sink-wide pause", async () => {
    // Issue 16 item 2, end to end. Every first attempt fails, so the sink pauses and probes with one
    // request at a time; that probe used to be a fresh event's first attempt every time (0 delivered
    // in 70 s with 120 events). Now it is the oldest event whose retry is due.
    const seen = new Map<string, number>();
    const r = await receiver((req) => {
      const id = req.headers['webhook-id'] as string;
      const n = (seen.get(id) ?? 0) + 1;
      seen.set(id, n);
      return n <= 2 ? { status: 500, body: 'not yet' } : { status: 204 };
    });
    const d = dispatch(sink({ url: r.url }), { retry: { attempts: 6, initialDelay: 100, maxDelay: 5_000 } });
    const events = Array.from({ length: 40 }, (_, i) => testEnvelope({ key: `k${i}`, new: { n: i } }));
    const started = Date.now();
    const results = await Promise.all(events.map((e) => d.deliver(e)));
    const took = Date.now() - started;
    expect(results.map((x) => `${x.status}/${x.attempts}`)).toEqual(events.map(() => 'delivered/3'));
    expect(r.requests).toHaveLength(120);
    // Each event needs 100–600 ms of its own backoff; before the fix, 40 probes at up to 5 s each.
    expect(took).toBeLessThan(15_000);
    await d.stop(1000);
  }, 30_000);

  it('400 → dead after one attempt, with the status and the start of the body in the error', async () => {
    const r = await receiver(() => ({ status: 400, body: `{"error":"missing field \\"name\\""}${' pad'.repeat(500)}` }));
    const d = dispatch(sink({ url: `${r.url}/in` }));
    const result = await d.deliver(testEnvelope());
    expect(result).toMatchObject({ status: 'dead', attempts: 1 });
    const error = (result as { error: SidekickError }).error;
    expect(error.code).toBe('HTTP_400');
    expect(error.message).toContain(`POST ${r.url}/in answered HTTP 400: {"error":"missing field \\"name\\""}`);
    expect(error.message.length).toBeLessThan(700); // only the start of the body (≤ 512 bytes)
    expect(r.requests).toHaveLength(1);
    await d.stop(1000);
  });

  it('429 with Retry-After: 1 → the retry comes no sooner than a second later', async () => {
    const r = await receiver((_req, i) => (i === 0 ? { status: 429, headers: { 'retry-after': '1' } } : { status: 204 }));
    const d = dispatch(sink({ url: r.url }), { retry: { attempts: 5, initialDelay: 20, maxDelay: 5000 } });
    expect(await d.deliver(testEnvelope())).toEqual({ status: 'delivered', attempts: 2 });
    expect(r.requests).toHaveLength(2);
    expect(r.requests[1]!.at - r.requests[0]!.at).toBeGreaterThanOrEqual(990);
    // same event, same id; a fresh timestamp per attempt
    expect(r.requests[1]!.headers['webhook-id']).toBe(r.requests[0]!.headers['webhook-id']);
    await d.stop(1000);
  });

  it('a receiver down for a while, then back on the same port: nothing is lost', async () => {
    const r = await receiver();
    await r.close();
    const d = dispatch(sink({ url: r.url }), { retry: { attempts: 3, initialDelay: 25, maxDelay: 200 } });
    const events = Array.from({ length: 50 }, (_, i) => testEnvelope({ key: `k${i % 5}` }));
    const pending = events.map((e) => d.deliver(e));
    await new Promise((res) => setTimeout(res, 700)); // down for longer than `attempts` backoffs would last
    await r.reopen();
    const results = await Promise.all(pending);
    expect(results.map((x: Delivery) => x.status)).toEqual(events.map(() => 'delivered'));
    const ids = new Set(r.requests.map((q) => q.headers['webhook-id']));
    for (const e of events) expect(ids.has(e.id)).toBe(true);
    await d.stop(1000);
  });

  it('a receiver that never answers → a retriable timeout error (not "unavailable")', async () => {
    const r = await receiver(() => 'hang');
    const s = sink({ url: r.url, timeout: '300ms' });
    const started = Date.now();
    const outcome = await sendOne(s, testEnvelope());
    expect(Date.now() - started).toBeLessThan(3000);
    expect(outcome.ok).toBe(false);
    if (!outcome.ok) {
      expect(outcome.error).toBeInstanceOf(RetriableError);
      expect(outcome.error.code).toBe('HTTP_TIMEOUT');
      expect((outcome.error as RetriableError).unavailable).toBe(false);
    }
  });

  it('a closed port → retriable and unavailable (the sink waits instead of burning attempts)', async () => {
    const r = await receiver();
    await r.close();
    const outcome = await sendOne(sink({ url: r.url }), testEnvelope());
    expect(outcome).toMatchObject({ ok: false, error: { code: 'ECONNREFUSED', retriable: true, unavailable: true } });
  });

  it('signatures verify with an independent Standard Webhooks verifier, for every rotated secret', async () => {
    const r = await receiver();
    const secrets = ['whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'a raw secret ✓'];
    const s = sink({ url: r.url, secret: secrets });
    await sendOne(s, testEnvelope());
    await sendOne(s, notifyEnvelope('ch', 'non-JSON payload ünïcode', 1));
    for (const q of r.requests) {
      expect(q.headers['webhook-signature']?.toString().split(' ')).toHaveLength(2);
      for (const secret of secrets) expect(verifyStandardWebhook(secret, q.headers, q.body)).toBe(true);
      expect(verifyStandardWebhook('whsec_dGhlIHdyb25nIHNlY3JldA==', q.headers, q.body)).toBe(false);
      expect(verifyStandardWebhook(secrets[0]!, q.headers, `${q.body} `)).toBe(false);
    }
  });

  it('format skor: what skor POSTed, so skor receivers work unchanged', async () => {
    const r = await receiver();
    const s = sink({ url: r.url, format: 'skor' });
    const base = { source: 'table' as const, channel: 'public.test_table', schema: 'public', table: 'test_table', key: '1' };
    await sendOne(s, testEnvelope({ ...base, op: 'INSERT', new: { id: 1, name: 'abc1' }, old: null }));
    await sendOne(s, testEnvelope({ ...base, op: 'UPDATE', new: { id: 1, name: 'pqr1' }, old: { id: 1, name: 'abc1' } }));
    await sendOne(s, testEnvelope({ ...base, op: 'DELETE', new: null, old: { id: 1, name: 'pqr1' } }));
    const skorRaw = '{"table" : "t", "schema" : "public", "op" : "INSERT", "data" : {"c1":1}}';
    await sendOne(s, notifyEnvelope('skor', skorRaw, 1));
    expect(r.requests.map((q) => q.headers['content-type'])).toEqual(Array(4).fill('application/json'));
    expect(r.requests.slice(0, 3).map((q) => JSON.parse(q.body))).toEqual([
      { table: 'test_table', schema: 'public', op: 'INSERT', data: { id: 1, name: 'abc1' } },
      { table: 'test_table', schema: 'public', op: 'UPDATE', data: { id: 1, name: 'pqr1' } },
      { table: 'test_table', schema: 'public', op: 'DELETE', data: { id: 1, name: 'pqr1' } },
    ]);
    expect(r.requests[3]!.body).toBe(skorRaw);
  });

  it('format cloudevents: structured CloudEvents 1.0 (the one mapping, docs/cloudevents.md) with its content type', async () => {
    const r = await receiver();
    const s = sink({ url: r.url, format: 'cloudevents' });
    const e = testEnvelope({ op: 'DELETE', new: null, old: { id: 7 }, key: '7', seq: '7' });
    await sendOne(s, e);
    expect(r.requests[0]!.headers['content-type']).toBe('application/cloudevents+json; charset=utf-8');
    expect(JSON.parse(r.requests[0]!.body)).toEqual({
      specversion: '1.0',
      id: e.id,
      source: '/pg-sidekick/public.contract',
      type: 'pg-sidekick.row.delete',
      subject: '7',
      time: e.at,
      seq: '7',
      datacontenttype: 'application/json',
      data: { op: 'DELETE', schema: 'public', table: 'contract', key: '7', new: null, old: { id: 7 }, txid: '1' },
    });
  });

  it('format payload: the NOTIFY payload byte for byte', async () => {
    const r = await receiver();
    const s = sink({ url: r.url, format: 'payload', method: 'PUT' });
    await sendOne(s, notifyEnvelope('c', '{ "spaced" : true }', 1));
    await sendOne(s, notifyEnvelope('c', 'plain text', 1));
    expect(r.requests.map((q) => [q.method, q.body, q.headers['content-type']])).toEqual([
      ['PUT', '{ "spaced" : true }', 'application/json'],
      ['PUT', 'plain text', 'text/plain; charset=utf-8'],
    ]);
  });

  it('redirects are not followed by default (fatal, says why); followRedirects follows 307/308 with the body, never 301/302', async () => {
    const target = await receiver();
    const r = await receiver((req) => {
      if (req.path === '/temp') return { status: 307, headers: { location: '/moved' } };
      if (req.path === '/perm') return { status: 301, headers: { location: `${target.url}/moved` } };
      if (req.path === '/away') return { status: 308, headers: { location: `${target.url}/there` } };
      return { status: 204 };
    });
    const plain = await sendOne(sink({ url: `${r.url}/temp` }), testEnvelope());
    expect(plain).toMatchObject({ ok: false, error: { code: 'HTTP_307', retriable: false } });
    expect(r.requests.map((q) => q.path)).toEqual(['/temp']);

    const following = sink({ url: `${r.url}/temp`, followRedirects: true, secret: 'k', headers: { Authorization: 'Bearer x' } });
    const e = testEnvelope();
    expect(await sendOne(following, e)).toEqual({ ok: true });
    const moved = r.requests.find((q) => q.path === '/moved')!;
    expect(moved.method).toBe('POST');
    expect(JSON.parse(moved.body).id).toBe(e.id);
    expect(moved.headers.authorization).toBe('Bearer x'); // same origin: credentials kept
    expect(verifyStandardWebhook('k', moved.headers, moved.body)).toBe(true);

    // to another origin: configured credentials are dropped, the signature stays
    expect(
      await sendOne(sink({ url: `${r.url}/away`, followRedirects: 2, secret: 'k', headers: { Authorization: 'Bearer x' } }), testEnvelope()),
    ).toEqual({ ok: true });
    const there = target.requests.find((q) => q.path === '/there')!;
    expect(there.headers.authorization).toBeUndefined();
    expect(verifyStandardWebhook('k', there.headers, there.body)).toBe(true);

    // 301 would turn the POST into a GET without a body: never followed
    expect(await sendOne(sink({ url: `${r.url}/perm`, followRedirects: true }), testEnvelope())).toMatchObject({
      ok: false,
      error: { code: 'HTTP_301' },
    });
    expect(target.requests.filter((q) => q.path === '/moved')).toHaveLength(0);
  });

  it('never logs header values or secrets, even while failing', async () => {
    const lines: string[] = [];
    const logger = createLogger({
      level: 'trace',
      destination: new Writable({
        write(c, _e, cb) {
          lines.push(String(c));
          cb();
        },
      }),
    });
    const r = await receiver((_q, i) => (i < 2 ? { status: 503 } : { status: 400, body: 'no' }));
    const s = sink(
      { url: `${r.url}/x?token=querysecret`, headers: { Authorization: 'Bearer hdrsecret', 'X-Api-Key': 'keysecret' }, secret: 'signsecret' },
      logger,
    );
    await s.start(new AbortController().signal);
    const d = createDispatcher({
      sink: s,
      logger,
      options: { retry: { attempts: 5, initialDelay: 5, maxDelay: 20 }, concurrency: 4, batch: { size: 1, linger: 0 }, maxQueued: 100 },
    });
    expect((await d.deliver(testEnvelope())).status).toBe('dead');
    await d.stop(100);
    const text = lines.join('');
    expect(text).toContain('HTTP 400'); // the logs did record the failure…
    for (const secret of ['hdrsecret', 'keysecret', 'signsecret', 'querysecret']) expect(text).not.toContain(secret); // …but no secret
  });

  it('check() proves the receiver answers, without delivering anything; an unreachable one fails', async () => {
    const r = await receiver(() => ({ status: 405 }));
    const s = sink({ url: `${r.url}/hooks/{table}` });
    expect(await s.check!(new AbortController().signal)).toContain('HEAD answered 405');
    expect(r.requests.map((q) => [q.method, q.path])).toEqual([['HEAD', '/hooks/']]);
    await r.close();
    await expect(sink({ url: r.url }).check!(new AbortController().signal)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });

  it('stop() aborts a request that hangs instead of waiting for it forever', async () => {
    const r = await receiver(() => 'hang');
    const s = sink({ url: r.url, timeout: '60s' });
    const d = dispatch(s);
    const pending = d.deliver(testEnvelope());
    await new Promise((res) => setTimeout(res, 100));
    const started = Date.now();
    await d.stop(100);
    await s.stop();
    expect((await pending).status).toBe('aborted');
    expect(Date.now() - started).toBeLessThan(3000);
  });

  /** A node:http server whose handler may misbehave at the socket level; its URL. */
  async function hostile(handle: (req: IncomingMessage, res: ServerResponse, i: number) => void): Promise<string> {
    let i = 0;
    const server = createServer((req, res) => {
      req.resume();
      req.on('end', () => handle(req, res, i++));
    });
    servers.push(server);
    await new Promise<void>((res) => server.listen(0, '127.0.0.1', () => res()));
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
  }

  it('a 200 whose body never ends still counts as delivered: reading stops after 1 MiB, the next event gets through', async () => {
    const url = await hostile((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      const chunk = 'x'.repeat(16_384);
      const pump = () => {
        while (!res.destroyed && res.write(chunk));
        if (!res.destroyed) res.once('drain', pump);
      };
      pump();
    });
    // The body timeout (30 s) would end it too, much later: only the size cap ends it this soon.
    const s = sink({ url, timeout: '30s' });
    const started = Date.now();
    expect(await sendOne(s, testEnvelope())).toEqual({ ok: true });
    expect(await sendOne(s, testEnvelope())).toEqual({ ok: true });
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it('a body trickling in a byte at a time is cut once the body timeout is over in all; the status stands', async () => {
    const trickle = (status: number) => (_req: IncomingMessage, res: ServerResponse) => {
      res.writeHead(status, { 'content-type': 'text/plain' });
      const timer = setInterval(() => (res.destroyed ? clearInterval(timer) : res.write('x')), 50);
    };
    // Each pause (50 ms) is far below the 400 ms body timeout, so only a bound on the whole body ends it.
    const s = sink({ url: await hostile(trickle(200)), timeout: '400ms' });
    const started = Date.now();
    expect(await sendOne(s, testEnvelope())).toEqual({ ok: true });
    expect(Date.now() - started).toBeLessThan(5000);
    const failing = await sendOne(sink({ url: await hostile(trickle(503)), timeout: '400ms' }), testEnvelope());
    expect(failing).toMatchObject({ ok: false, error: { code: 'HTTP_503', retriable: true } });
  });

  it('a connection reset, then a reply that is not HTTP: retriable errors; the same event is delivered once the receiver behaves', async () => {
    const ids: string[] = [];
    const url = await hostile((req, res, i) => {
      ids.push(req.headers['webhook-id'] as string);
      if (i % 3 === 0) req.socket.resetAndDestroy();
      else if (i % 3 === 1) req.socket.end('HELLO, THIS IS NOT HTTP\r\n\r\n');
      else res.writeHead(204).end();
    });
    const s = sink({ url });
    expect(await sendOne(s, testEnvelope())).toMatchObject({ ok: false, error: { code: 'ECONNRESET', retriable: true } });
    const second = await sendOne(s, testEnvelope());
    expect(second).toMatchObject({ ok: false, error: { code: 'HTTP_NETWORK', retriable: true } });
    if (!second.ok) expect(second.error.message).toMatch(/POST http:\/\/127\.0\.0\.1:\d+\/hook: .*HTTP/);
    expect(await sendOne(s, testEnvelope())).toEqual({ ok: true });
    // Through the dispatcher: reset, not HTTP, then 204 — three attempts of one event, one webhook-id.
    const d = dispatch(s);
    const e = testEnvelope();
    expect(await d.deliver(e)).toEqual({ status: 'delivered', attempts: 3 });
    expect(ids.slice(3)).toEqual([e.id, e.id, e.id]);
    await d.stop(1000);
  });

  /** A forward proxy that records the CONNECT tunnels it opens. */
  async function tunnellingProxy(): Promise<{ url: string; tunnels: string[] }> {
    const tunnels: string[] = [];
    const proxy = createServer();
    proxy.on('connect', (req, client: Socket, head) => {
      tunnels.push(req.url ?? '');
      const [host, port] = (req.url ?? '').split(':');
      const upstream = netConnect(Number(port), host, () => {
        client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
        upstream.write(head);
        upstream.pipe(client);
        client.pipe(upstream);
      });
      upstream.on('error', () => client.destroy());
      client.on('error', () => upstream.destroy());
    });
    servers.push(proxy);
    await new Promise<void>((res) => proxy.listen(0, '127.0.0.1', () => res()));
    return { url: `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`, tunnels };
  }

  it('goes through an explicit HTTP proxy (CONNECT tunnel)', async () => {
    const r = await receiver();
    const proxy = await tunnellingProxy();
    expect(await sendOne(sink({ url: `${r.url}/via`, proxy: proxy.url }), testEnvelope())).toEqual({ ok: true });
    expect(proxy.tunnels).toEqual([`127.0.0.1:${r.port}`]);
    expect(r.requests.map((q) => q.path)).toEqual(['/via']);
  });

  it('with proxy: env (the default), takes HTTP_PROXY as it was when the sink started, and goes direct without one', async () => {
    const r = await receiver();
    const proxy = await tunnellingProxy();
    const saved = {
      HTTP_PROXY: process.env.HTTP_PROXY,
      http_proxy: process.env.http_proxy,
      NO_PROXY: process.env.NO_PROXY,
      no_proxy: process.env.no_proxy,
    };
    try {
      for (const name of Object.keys(saved)) delete process.env[name];
      const direct = sink({ url: `${r.url}/direct` });
      process.env.HTTP_PROXY = proxy.url;
      const proxied = sink({ url: `${r.url}/via` });
      expect(await sendOne(proxied, testEnvelope())).toEqual({ ok: true });
      expect(await sendOne(direct, testEnvelope())).toEqual({ ok: true });
      expect(proxy.tunnels).toEqual([`127.0.0.1:${r.port}`]);
      expect(r.requests.map((q) => q.path).sort()).toEqual(['/direct', '/via']);
    } finally {
      for (const [name, value] of Object.entries(saved)) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
    }
  });
});

describe('webhook sink over TLS (certificates made with openssl for this run)', () => {
  let dir = '';
  const pem = (name: string) => readFileSync(join(dir, name), 'utf8');
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'webhook-tls-'));
    const run = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
    run('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=sidekick test CA');
    writeFileSync(join(dir, 'san.ext'), 'subjectAltName=IP:127.0.0.1\n');
    for (const who of ['server', 'client']) {
      run('req', ...ec, '-keyout', `${who}.key`, '-out', `${who}.csr`, '-subj', `/CN=${who}`);
      run(
        'x509',
        '-req',
        '-in',
        `${who}.csr`,
        '-CA',
        'ca.crt',
        '-CAkey',
        'ca.key',
        '-CAcreateserial',
        '-out',
        `${who}.crt`,
        '-days',
        '2',
        ...(who === 'server' ? ['-extfile', 'san.ext'] : []),
      );
    }
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('trusts a custom CA (file path), refuses an unknown one (retriable, unavailable)', async () => {
    const r = await receiver(undefined, { tls: { key: pem('server.key'), cert: pem('server.crt') } });
    expect(await sendOne(sink({ url: r.url, tls: { ca: join(dir, 'ca.crt') } }), testEnvelope())).toEqual({ ok: true });
    const refused = await sendOne(sink({ url: r.url, proxy: 'none' }), testEnvelope());
    expect(refused).toMatchObject({ ok: false, error: { retriable: true, unavailable: true } });
    expect(r.requests).toHaveLength(1);
  });

  it('presents a client certificate (mutual TLS, inline PEM)', async () => {
    const r = await receiver(undefined, {
      tls: { key: pem('server.key'), cert: pem('server.crt'), ca: pem('ca.crt'), requestCert: true, rejectUnauthorized: true },
    });
    const withCert = sink({ url: r.url, tls: { ca: pem('ca.crt'), cert: pem('client.crt'), key: pem('client.key') } });
    expect(await sendOne(withCert, testEnvelope())).toEqual({ ok: true });
    const without = await sendOne(sink({ url: r.url, tls: { ca: pem('ca.crt') } }), testEnvelope());
    expect(without.ok).toBe(false);
    expect(r.requests).toHaveLength(1);
  });

  it('a missing certificate file is a config error at creation, naming the sink and key', () => {
    expect(() => sink({ url: 'https://127.0.0.1:1/', tls: { ca: join(dir, 'nope.crt') } })).toThrow(/sink "hook": tls\.ca: cannot read file/);
  });
});

// The shared contract: a working server, a closed port, and a server answering 400 for some ids.
let contractReceiver: Receiver | undefined;
const fatalIds = new Set<string>();
sinkContract({
  name: 'webhook',
  async create() {
    contractReceiver ??= await startReceiver((req) =>
      fatalIds.has(req.headers['webhook-id'] as string) ? { status: 400, body: 'rejected' } : { status: 204 },
    );
    return webhookSink.create(schema.parse({ url: `${contractReceiver.url}/contract` }), contractContext('contract-hook'));
  },
  async received() {
    return (contractReceiver?.requests ?? []).map((q) => q.headers['webhook-id'] as string);
  },
  async createUnreachable() {
    const r = await startReceiver();
    await r.close();
    return webhookSink.create(schema.parse({ url: r.url }), contractContext('contract-hook'));
  },
  async fatalCase() {
    contractReceiver ??= await startReceiver((req) =>
      fatalIds.has(req.headers['webhook-id'] as string) ? { status: 400, body: 'rejected' } : { status: 204 },
    );
    const batch = [testEnvelope(), testEnvelope(), testEnvelope()];
    fatalIds.add(batch[1]!.id);
    return {
      sink: webhookSink.create(schema.parse({ url: `${contractReceiver.url}/contract` }), contractContext('contract-hook')),
      batch,
      fatal: [1],
    };
  },
});
afterAll(async () => {
  await contractReceiver?.close();
});
