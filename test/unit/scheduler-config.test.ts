import { describe, expect, it } from 'vitest';
import { sinkDefinitions } from '../../sinks/index.js';
import { parseConfig } from '../../src/config.js';
import { parseLaterArgs } from '../../src/scheduler/later-args.js';
import { laterConnection } from '../../src/commands/later.js';

const parse = (doc: unknown) => parseConfig(doc, { sinks: sinkDefinitions, file: 'sidekick.yaml' });

describe('scheduler config', () => {
  it('is off by default, on with a section or a later sink, with documented defaults', () => {
    expect(parse({ sinks: {} }).scheduler.enabled).toBe(false);
    const on = parse({ sinks: {}, scheduler: {} }).scheduler;
    expect(on).toEqual({
      enabled: true,
      pollInterval: 1000,
      concurrency: 2,
      batchSize: 50,
      missedAfter: 60_000,
      history: { retention: 7 * 86_400_000 },
    });
    expect(parse({ sinks: { l: { type: 'later' } } }).scheduler.enabled).toBe(true);
    expect(parse({ sinks: { l: { type: 'later' } }, scheduler: { enabled: false } }).scheduler.enabled).toBe(false);
    expect(parse({ sinks: {}, scheduler: { pollInterval: '250ms', history: { retention: '1d' } } }).scheduler).toMatchObject({
      pollInterval: 250,
      history: { retention: 86_400_000 },
    });
  });

  it('pglater: true is shorthand for LISTEN pglater → later sink, with the route', () => {
    const config = parse({ sinks: { console: { type: 'stdout' } }, listen: ['jobs'], scheduler: { pglater: true } });
    expect(config.listen).toEqual(['jobs', 'pglater']);
    expect(config.sinks.map((s) => `${s.name}:${s.type}`)).toEqual(['console:stdout', 'pglater:later']);
    expect(config.routes).toEqual([{ from: ['pglater'], to: ['pglater'] }]);
    const custom = parse({ sinks: {}, scheduler: { pglater: { channel: 'later_jobs', sink: 'jobs', allow: ['^select '] } } });
    expect(custom.listen).toEqual(['later_jobs']);
    expect(custom.sinks[0]).toMatchObject({ name: 'jobs', type: 'later', options: { allow: ['^select '] } });
  });

  it('rejects unknown keys, bad values and a clashing sink name, naming the path', () => {
    expect(() => parse({ sinks: {}, scheduler: { pollIntervall: 5 } })).toThrow(/scheduler: unknown key|scheduler\.pollIntervall: unknown key/);
    expect(() => parse({ sinks: {}, scheduler: { concurrency: 0 } })).toThrow(/scheduler\.concurrency/);
    expect(() => parse({ sinks: { pglater: { type: 'stdout' } }, scheduler: { pglater: true } })).toThrow(/a sink named "pglater" already exists/);
    expect(() => parse({ sinks: { l: { type: 'later', allow: ['('] } } })).toThrow(/sinks\.l\.allow\[0\]: not a valid regular expression/);
    expect(() => parse({ sinks: { l: { type: 'later', attempts: 0 } } })).toThrow(/sinks\.l\.attempts/);
  });
});

describe('pglater command line', () => {
  it("reads pglater's options the getopt way", () => {
    expect(parseLaterArgs([])).toEqual({
      action: 'run',
      options: { channel: 'pglater', verbose: false, quiet: false, noPassword: false, install: true, allow: [] },
    });
    const r = parseLaterArgs(['-vl', 'jobs', '-hdb.local', '--port=5433', '-U', 'app', '-w', 'mydb']);
    expect(r).toEqual({
      action: 'run',
      options: {
        channel: 'jobs',
        verbose: true,
        quiet: false,
        noPassword: true,
        install: true,
        host: 'db.local',
        port: '5433',
        username: 'app',
        dbname: 'mydb',
        allow: [],
      },
    });
    expect(parseLaterArgs(['mydb', 'me'])).toMatchObject({ options: { dbname: 'mydb', username: 'me' } });
    expect(parseLaterArgs(['--list', 'x', '--verb'])).toMatchObject({ options: { channel: 'x', verbose: true } });
    expect(parseLaterArgs(['--allow', '^select ', '--allow=/^delete /i', '--no-install'])).toMatchObject({
      options: { allow: ['^select ', '/^delete /i'], install: false },
    });
    expect(parseLaterArgs(['--help'])).toEqual({ action: 'help' });
    expect(parseLaterArgs(['-?'])).toEqual({ action: 'help' });
    expect(parseLaterArgs(['-V', '--bogus'])).toEqual({ action: 'version' });
    expect(parseLaterArgs(['--bogus', '-V'])).toEqual({ action: 'error', message: "unrecognized option '--bogus'" });
    expect(parseLaterArgs(['-x'])).toEqual({ action: 'error', message: "invalid option -- 'x'" });
    expect(parseLaterArgs(['-l'])).toEqual({ action: 'error', message: "option requires an argument -- 'l'" });
    expect(parseLaterArgs(['--no'])).toMatchObject({ action: 'error', message: expect.stringMatching(/ambiguous/) });
    expect(parseLaterArgs(['--', '-v'])).toMatchObject({ options: { dbname: '-v', verbose: false } });
  });

  it('builds the connection from -d (name, conninfo or URI) with -h/-p/-U on top, completed as libpq does', () => {
    // The resolver's view of this machine, for the test: no socket file, OS user "os", no password file.
    const machine = { socketExists: () => false, osUser: () => 'os', homeDir: '/nowhere', readPassfile: () => undefined };
    const config = (options: Parameters<typeof laterConnection>[0], env: NodeJS.ProcessEnv = {}) => laterConnection(options, env, machine).config;
    expect(config({ dbname: 'app' })).toMatchObject({ host: 'localhost', port: 5432, user: 'os', database: 'app' });
    expect(config({ dbname: 'postgres://u:p%40ss@h:5433/db?sslmode=disable', host: 'other' })).toMatchObject({
      host: 'other',
      port: 5433,
      user: 'u',
      password: 'p@ss',
      database: 'db',
      ssl: false,
    });
    expect(config({ dbname: 'host=x dbname=y', port: '6000', username: 'me' })).toMatchObject({ host: 'x', database: 'y', port: 6000, user: 'me' });
    expect(config({}, { DATABASE_URL: 'postgres://a@b/c' })).toMatchObject({ host: 'b', user: 'a', database: 'c' });
    expect(config({ dbname: 'host=x', host: 'flag' }, { PGHOST: 'env', PGUSER: 'envuser' })).toMatchObject({ host: 'flag', user: 'envuser' });
    // What the other commands accept too: verify-ca with its root certificate.
    expect(() => config({ dbname: 'host=x sslmode=verify-ca sslrootcert=/no/such/ca.pem' })).toThrow(/no\/such\/ca\.pem/);
    expect(() => config({ port: 'x' })).toThrow('invalid integer value "x" for connection option "port"');
  });
});
