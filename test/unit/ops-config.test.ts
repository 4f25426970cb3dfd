import { describe, expect, it } from 'vitest';
import { sinkDefinitions } from '../../sinks/index.js';
import { parseConfig } from '../../src/config.js';
import { ConfigError } from '../../src/errors.js';
import { createHeartbeat, createReadinessChecks } from '../../src/readiness.js';

const parse = (doc: Record<string, unknown>, env: Record<string, string> = {}) =>
  parseConfig({ sinks: {}, ...doc }, { file: 'ops.yaml', env, sinks: sinkDefinitions });

describe('config: http and log sections', () => {
  it('serves nothing without an http section; `http: {}` means 127.0.0.1:9187', () => {
    expect(parse({}).http).toEqual({ enabled: false, host: '127.0.0.1', port: 9187 });
    expect(parse({ http: {} }).http).toEqual({ enabled: true, host: '127.0.0.1', port: 9187 });
    expect(parse({ http: { host: '0.0.0.0', port: 9000, enabled: false } }).http).toEqual({ enabled: false, host: '0.0.0.0', port: 9000 });
  });

  it('accepts a port from an environment variable and rejects bad ones by key path', () => {
    expect(parse({ http: { port: '${METRICS_PORT}' } }, { METRICS_PORT: '9300' }).http.port).toBe(9300);
    expect(() => parse({ http: { port: 70_000 } })).toThrow(/http\.port/);
    expect(() => parse({ http: { port: 'ninety' } })).toThrow(/http\.port/);
    expect(() => parse({ http: { bind: 'x' } })).toThrow(/http\.bind: unknown key/);
    expect(() => parse({ http: { port: 70_000 } })).toThrow(ConfigError);
  });

  it('takes log.format', () => {
    expect(parse({ log: { format: 'pretty' } }).log.format).toBe('pretty');
    expect(parse({}).log.format).toBeUndefined();
    expect(() => parse({ log: { format: 'xml' } })).toThrow(/log\.format/);
  });
});

describe('readiness checks', () => {
  it('is ready only when every check passes; a throwing check fails; names are unique', () => {
    const checks = createReadinessChecks();
    expect(checks.evaluate()).toEqual({ ready: true, checks: {} });
    let ok = true;
    const remove = checks.register('a', () => ok);
    checks.register('b', () => {
      throw new Error('broken');
    });
    expect(checks.evaluate()).toEqual({ ready: false, checks: { a: true, b: false } });
    expect(() => checks.register('a', () => true)).toThrow(/already registered/);
    ok = false;
    expect(checks.evaluate().checks.a).toBe(false);
    remove();
    expect(Object.keys(checks.evaluate().checks)).toEqual(['b']);
  });

  it('a heartbeat is alive only within maxSilence of its last beat', () => {
    let now = 0;
    const hb = createHeartbeat(1_000, () => now);
    expect(hb.alive()).toBe(false);
    hb.beat();
    now = 1_000;
    expect(hb.alive()).toBe(true);
    now = 1_001;
    expect(hb.alive()).toBe(false);
  });
});
