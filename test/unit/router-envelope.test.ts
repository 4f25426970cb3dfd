import { describe, expect, it } from 'vitest';
import { compileTemplate, envelopeJson, notifyEnvelope, parsePayload, payloadText } from '../../src/envelope.js';
import { createRouter } from '../../src/router.js';

describe('router', () => {
  const router = createRouter([
    { from: ['*'], to: ['all'] },
    { from: ['public.*', 'audit_?'], to: ['hook', 'all'] },
    { from: ['Jobs'], to: ['jobs'] },
  ]);
  const env = (channel: string) => notifyEnvelope(channel, '', 1);
  it('matches names and globs, each sink once, case-sensitively', () => {
    expect(router.route(env('public.orders'))).toEqual(['all', 'hook']);
    expect(router.route(env('audit_1'))).toEqual(['all', 'hook']);
    expect(router.route(env('audit_12'))).toEqual(['all']);
    expect(router.route(env('Jobs'))).toEqual(['all', 'jobs']);
    expect(router.route(env('jobs'))).toEqual(['all']);
  });
  it('routes nothing when no rule matches', () => {
    expect(createRouter([{ from: ['a'], to: ['x'] }]).route(env('b'))).toEqual([]);
  });
});

describe('envelope', () => {
  it('parses JSON payloads and keeps anything else as a string', () => {
    expect(parsePayload('{"a":1}')).toEqual({ a: 1 });
    expect(parsePayload('[1,2]')).toEqual([1, 2]);
    expect(parsePayload('42')).toBe(42);
    expect(parsePayload('{broken')).toBe('{broken');
    expect(parsePayload('')).toBe('');
    expect(parsePayload('hello')).toBe('hello');
  });
  it('keeps the raw payload bytes out of the JSON form but available to payload formats', () => {
    const e = notifyEnvelope('c', '{ "a" : 1 }', 7);
    expect(payloadText(e)).toBe('{ "a" : 1 }');
    const json = envelopeJson(e);
    expect(json).not.toHaveProperty('raw');
    expect(json).toMatchObject({ source: 'notify', channel: 'c', payload: { a: 1 }, pid: 7 });
    expect(typeof json.id).toBe('string');
    expect(new Date(json.at as string).toISOString()).toBe(json.at);
  });
  it('compiles templates and refuses unknown fields', () => {
    const t = compileTemplate('pg.{schema}.{table}', encodeURIComponent);
    expect(t({ ...notifyEnvelope('x', '', 1), schema: 'public', table: 'a b' })).toBe('pg.public.a%20b');
    expect(() => compileTemplate('{nope}')).toThrow(/unknown template field \{nope\}/);
  });
  it('a field the event lacks (or has empty) is a per-event FatalError TEMPLATE_FIELD_MISSING, not an empty string', () => {
    const t = compileTemplate('/in/{schema}/{table}', encodeURIComponent, { name: 'url' });
    const n = notifyEnvelope('jobs', '{}', 1);
    expect(() => t(n)).toThrow(expect.objectContaining({ name: 'FatalError', code: 'TEMPLATE_FIELD_MISSING', retriable: false }));
    expect(() => t(n)).toThrow('url "/in/{schema}/{table}" needs {schema}, which this notify event on channel "jobs" does not have');
    expect(() => compileTemplate('k/{key}')({ ...n, key: '' })).toThrow(/needs \{key\}/);
    // Opt-in for templates with their own fallback (the Kafka key: empty → the channel).
    expect(compileTemplate('{key}', undefined, { missing: 'empty' })(n)).toBe('');
  });
  it('{op} is filled for every event: the row op, else the source in capitals', () => {
    const op = compileTemplate('{channel}.{op}');
    expect(op(notifyEnvelope('jobs', '', 1))).toBe('jobs.NOTIFY');
    expect(op({ ...notifyEnvelope('jobs', '', 1), source: 'publish' })).toBe('jobs.PUBLISH');
    expect(op({ id: '1', source: 'table', channel: 'public.t', op: 'DELETE', at: '' })).toBe('public.t.DELETE');
  });
});
