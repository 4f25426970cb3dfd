import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { sinkDefinitions } from '../../sinks/index.js';
import { loadConfig, parseConfig } from '../../src/config.js';
import { ConfigError } from '../../src/errors.js';

const parse = (doc: unknown, env: Record<string, string> = {}) => parseConfig(doc, { file: 'test.yaml', env, sinks: sinkDefinitions });
const minimal = { sinks: { console: { type: 'stdout' } }, routes: [{ from: '*', to: ['console'] }] };

function errorOf(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

describe('config', () => {
  it('accepts the contract shape and fills defaults', () => {
    const c = parse({ database: 'postgres://u@h/db', listen: ['jobs', 'audit'], ...minimal });
    expect(c.listen).toEqual(['jobs', 'audit']);
    expect(c.sinks[0]).toMatchObject({ name: 'console', type: 'stdout', options: { format: 'json' } });
    expect(c.sinks[0]?.dispatch.retry).toEqual({ attempts: 10, initialDelay: 500, maxDelay: 300_000 });
    expect(c.routes[0]).toEqual({ from: ['*'], to: ['console'] });
    expect(Object.isFrozen(c.sinks[0]?.dispatch.retry)).toBe(true);
  });

  it('parses durations', () => {
    const c = parse({ sinks: { console: { type: 'stdout', retry: { initialDelay: '250ms', maxDelay: '5m', maxAge: '24h' } } } });
    expect(c.sinks[0]?.dispatch.retry).toMatchObject({ initialDelay: 250, maxDelay: 300_000, maxAge: 86_400_000 });
    expect(errorOf(() => parse({ sinks: { console: { type: 'stdout', retry: { maxDelay: 'soon' } } } })).message).toContain(
      'sinks.console.retry.maxDelay: not a duration: "soon"',
    );
  });

  it('names the file and the path of an unknown key', () => {
    const e = errorOf(() => parse({ ...minimal, sinks: { console: { type: 'stdout', fromat: 'json' } } }));
    expect(e.message).toContain('in test.yaml');
    expect(e.message).toContain('sinks.console.fromat: unknown key');
    expect(errorOf(() => parse({ ...minimal, lisen: ['x'] })).message).toContain('lisen: unknown key');
  });

  it('names a wrong type', () => {
    expect(errorOf(() => parse({ ...minimal, listen: 'jobs' })).message).toMatch(/listen: .*array/i);
    expect(errorOf(() => parse({ sinks: { console: { type: 'stdout', format: 'xml' } } })).message).toContain('sinks.console.format');
  });

  it('rejects a route to a sink that does not exist, and unknown sink types', () => {
    expect(errorOf(() => parse({ ...minimal, routes: [{ from: 'a', to: ['console', 'nope'] }] })).message).toContain(
      'routes[0].to[1]: no sink named "nope"',
    );
    expect(errorOf(() => parse({ sinks: { k: { type: 'kafak' } } })).message).toContain('sinks.k.type: unknown sink type "kafak"');
  });

  it('interpolates ${VAR} and ${VAR:-default}, and names a missing variable', () => {
    const c = parse({ database: '${DB}', listen: ['${CH:-fallback}', '$${literal}'], ...minimal }, { DB: 'postgres://x/y' });
    expect(c.database).toBe('postgres://x/y');
    expect(c.listen).toEqual(['fallback', '${literal}']);
    expect(errorOf(() => parse({ database: 'postgres://${PGPASS_MISSING}@h', ...minimal })).message).toContain(
      'database: environment variable PGPASS_MISSING is not set',
    );
  });

  it('reports YAML syntax errors with file, line and column', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cfg-'));
    const file = join(dir, 'bad.yaml');
    writeFileSync(file, 'sinks:\n  console: { type: stdout\nroutes: []\n');
    expect(errorOf(() => loadConfig(file, { env: {}, sinks: sinkDefinitions })).message).toMatch(
      /invalid YAML in .*bad\.yaml at line \d+, column \d+/,
    );
    const json = join(dir, 'bad.json');
    writeFileSync(json, '{"sinks": ');
    expect(errorOf(() => loadConfig(json, { env: {}, sinks: sinkDefinitions })).message).toContain(`invalid JSON in ${json}`);
    expect(errorOf(() => loadConfig(join(dir, 'missing.yaml'), { env: {}, sinks: sinkDefinitions })).message).toContain('cannot read config file');
  });

  // Issue 16 item 7: the first problem used to hide the others (one fix, one run, the next problem).
  it('reports every problem of a config in one error, each with its path', () => {
    const message = errorOf(() =>
      parse({
        sinks: {
          hook: { type: 'webhook', url: 42 },
          k: { type: 'kafak' },
          console: { type: 'stdout', colour: 'red' },
        },
        routes: [
          { from: 'a', to: ['console'] },
          { from: 'b', to: 'nope' },
          { from: 'c', to: ['hook', 'gone'] },
        ],
      }),
    ).message;
    expect(message).toContain('in test.yaml');
    expect(message).toMatch(/sinks\.hook\.url: .*string/i);
    expect(message).toContain('sinks.k.type: unknown sink type "kafak"');
    expect(message).toContain('sinks.console.colour: unknown key');
    expect(message).toContain('routes[1].to: no sink named "nope"');
    expect(message).toContain('routes[2].to[1]: no sink named "gone"');
    expect(message.split('\n  - ')).toHaveLength(1 + 5);
  });

  it('reports sink and route problems along with top-level ones (wrong type, unknown key, missing variable)', () => {
    const message = errorOf(() =>
      parse({
        listen: 'jobs',
        lisen: ['x'],
        shutdown: { timeout: '${NO_SUCH_TIMEOUT}' },
        sinks: { k: { type: 'kafak' }, console: { type: 'stdout', concurrency: 'many' } },
        routes: [{ from: '*', to: ['console', 'nope'] }],
      }),
    ).message;
    expect(message).toMatch(/listen: .*array/i);
    expect(message).toContain('lisen: unknown key');
    expect(message).toContain('shutdown.timeout: environment variable NO_SUCH_TIMEOUT is not set');
    expect(message).toContain('sinks.k.type: unknown sink type "kafak"');
    expect(message).toMatch(/sinks\.console\.concurrency: .*number/);
    expect(message).toContain('routes[0].to[1]: no sink named "nope"');
  });

  it('a YAML alias bomb is a ConfigError naming the file, not a ReferenceError', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cfg-'));
    const file = join(dir, 'bomb.yaml');
    const levels = ['a: &a ["x","x","x","x","x","x","x","x","x"]'];
    for (let i = 1; i < 8; i++) {
      const prev = String.fromCharCode(96 + i);
      const name = String.fromCharCode(97 + i);
      levels.push(`${name}: &${name} [${Array(9).fill(`*${prev}`).join(',')}]`);
    }
    writeFileSync(file, `${levels.join('\n')}\nsinks: {}\n`);
    const e = errorOf(() => loadConfig(file, { env: {}, sinks: sinkDefinitions }));
    expect(e.message).toContain(`invalid YAML in ${file}`);
    expect(e.message).toMatch(/alias/i);
  });
});
