import { describe, expect, it } from 'vitest';
import { helpText, parseListenArgs, type ListenOptions } from '../../src/listen/args.js';
import { ConfigError } from '../../src/errors.js';
import {
  connectFailureMessage,
  databaseConnection,
  parseConnectionString,
  pgpassLookup,
  resolveConnection,
  type ResolveOptions,
} from '../../src/pg/connection.js';

function listen(argv: string[]): { options: ListenOptions; warnings: readonly string[] } {
  const parsed = parseListenArgs(argv);
  if (parsed.action !== 'listen') throw new Error(`expected a listen action, got ${JSON.stringify(parsed)}`);
  return parsed;
}

describe('pglisten arguments (getopt_long semantics)', () => {
  it('takes --listen=X, --listen X, -l X and -lX, in order, repeatable', () => {
    expect(listen(['--listen=a', '--listen', 'b', '-l', 'c', '-ld', '-l', '--weird']).options.channels).toEqual(['a', 'b', 'c', 'd', '--weird']);
  });

  it('keeps channel names exactly as written (case, spaces, quotes)', () => {
    expect(listen(['-l', 'Other', '--listen=with space', '-l', 'q"uote']).options.channels).toEqual(['Other', 'with space', 'q"uote']);
  });

  it('parses flags, clusters and connection options', () => {
    const { options } = listen(['-H0qw', '-d', 'app', '-h', '/tmp', '-p5433', '--username=bob']);
    expect(options).toEqual({
      channels: [],
      print0: true,
      context: true,
      quiet: true,
      noPassword: true,
      dbname: 'app',
      host: '/tmp',
      port: '5433',
      username: 'bob',
    });
    const cluster = listen(['-H0lchan']).options;
    expect(cluster).toMatchObject({ context: true, print0: true, channels: ['chan'] });
    expect(listen(['-0', '-l', 'x']).options).toMatchObject({ print0: true, context: false });
  });

  it('accepts unambiguous abbreviations of long options', () => {
    expect(listen(['--lis=a', '--con', '--pr', '--no-p', '--db', 'x']).options).toMatchObject({
      channels: ['a'],
      context: true,
      print0: true,
      noPassword: true,
      dbname: 'x',
    });
    expect(parseListenArgs(['--p'])).toEqual({ action: 'error', message: "option '--p' is ambiguous; possibilities: '--port' '--print0'" });
  });

  it('reports errors in glibc getopt words', () => {
    expect(parseListenArgs(['--bogus'])).toEqual({ action: 'error', message: "unrecognized option '--bogus'" });
    expect(parseListenArgs(['-x'])).toEqual({ action: 'error', message: "invalid option -- 'x'" });
    expect(parseListenArgs(['-l'])).toEqual({ action: 'error', message: "option requires an argument -- 'l'" });
    expect(parseListenArgs(['--listen'])).toEqual({ action: 'error', message: "option '--listen' requires an argument" });
    expect(parseListenArgs(['--quiet=yes'])).toEqual({ action: 'error', message: "option '--quiet' doesn't allow an argument" });
  });

  it('acts on --help, -?, --version and -V in order, like pglisten', () => {
    expect(parseListenArgs(['--help'])).toEqual({ action: 'help' });
    expect(parseListenArgs(['-?'])).toEqual({ action: 'help' });
    expect(parseListenArgs(['-l', 'x', '-V'])).toEqual({ action: 'version' });
    expect(parseListenArgs(['--version', '--bogus'])).toEqual({ action: 'version' });
    expect(parseListenArgs(['--bogus', '--version']).action).toBe('error');
  });

  it('takes DBNAME and USERNAME operands anywhere, options win, -- ends options', () => {
    expect(listen(['app', '-l', 'x', 'bob']).options).toMatchObject({ dbname: 'app', username: 'bob', channels: ['x'] });
    expect(listen(['-d', 'other', 'app']).options.dbname).toBe('other');
    expect(listen(['-l', 'x', '--', '-H']).options).toMatchObject({ dbname: '-H', context: false });
    expect(listen(['a', 'b', 'c']).warnings).toEqual(['extra command-line argument "c" ignored']);
  });

  it('documents every option in --help', () => {
    const help = helpText('1.2.3');
    for (const flag of [
      '-l, --listen=CHANNEL',
      '-H, --context',
      '-0, --print0',
      '-q, --quiet',
      '-V, --version',
      '-?, --help',
      '-h, --host=HOSTNAME',
      '-p, --port=PORT',
      '-U, --username=USERNAME',
      '-d, --dbname=DBNAME',
      '-w, --no-password',
    ]) {
      expect(help).toContain(flag);
    }
  });
});

describe('libpq-style connection settings', () => {
  const base: ResolveOptions = {
    env: {},
    socketExists: () => false,
    osUser: () => 'osuser',
    readFile: () => {
      throw new Error('no file');
    },
    homeDir: '/nonexistent',
    readPassfile: () => undefined,
  };

  it('parses URIs and keyword/value strings into libpq keywords', () => {
    expect(parseConnectionString('postgres://u%40x:p%3Aw@db.example:6543/my%20db?sslmode=require&application_name=a')).toEqual({
      user: 'u@x',
      password: 'p:w',
      host: 'db.example',
      port: '6543',
      dbname: 'my db',
      sslmode: 'require',
      application_name: 'a',
    });
    expect(parseConnectionString('postgresql://[::1]:5433/db')).toEqual({ host: '::1', port: '5433', dbname: 'db' });
    expect(parseConnectionString('postgresql:///db?host=%2Fvar%2Frun%2Fpostgresql')).toEqual({ dbname: 'db', host: '/var/run/postgresql' });
    expect(parseConnectionString("host=db port = 5432 dbname='my \\'db\\'' password=a\\ b user=''")).toEqual({
      host: 'db',
      port: '5432',
      dbname: "my 'db'",
      password: 'a b',
      user: '',
    });
    expect(() => parseConnectionString('host=db bogus=1')).toThrow('invalid connection option "bogus"');
    expect(() => parseConnectionString("dbname='open")).toThrow('unterminated quoted string');
    expect(() => parseConnectionString('postgres://a,b/db')).toThrow('several hosts');
  });

  it('falls back to libpq defaults: socket if present, else localhost; OS user; db named like the user', () => {
    expect(resolveConnection(base).config).toMatchObject({ host: 'localhost', port: 5432, user: 'osuser', database: 'osuser' });
    const onSocket = resolveConnection({ ...base, socketExists: (p) => p === '/var/run/postgresql/.s.PGSQL.5432' });
    expect(onSocket.config).toMatchObject({ host: '/var/run/postgresql', ssl: false });
    expect(onSocket.target).toBe('server on socket "/var/run/postgresql/.s.PGSQL.5432"');
  });

  it('reads the PG* environment variables for whatever is not given', () => {
    const env = {
      PGHOST: 'envhost',
      PGPORT: '6000',
      PGUSER: 'envuser',
      PGPASSWORD: 'secret',
      PGDATABASE: 'envdb',
      PGSSLMODE: 'disable',
      PGAPPNAME: 'app',
    };
    const r = resolveConnection({ ...base, env });
    expect(r.config).toMatchObject({
      host: 'envhost',
      port: 6000,
      user: 'envuser',
      password: 'secret',
      database: 'envdb',
      ssl: false,
      application_name: 'app',
    });
    expect(resolveConnection({ ...base, env, explicit: { host: 'flag' } }).config.host).toBe('flag');
  });

  it('lets a -d connection string override -h/-p/-U (libpq expand_dbname), but -h/-p/-U override DATABASE_URL', () => {
    const explicit = { host: 'flaghost', port: '1111', user: 'flaguser' };
    const fromD = resolveConnection({ ...base, explicit, dbname: 'postgres://urluser@urlhost:2222/urldb' }).config;
    expect(fromD).toMatchObject({ host: 'urlhost', port: 2222, user: 'urluser', database: 'urldb' });
    const fromEnv = resolveConnection({ ...base, explicit, env: { DATABASE_URL: 'postgres://urluser@urlhost:2222/urldb' } }).config;
    expect(fromEnv).toMatchObject({ host: 'flaghost', port: 1111, user: 'flaguser', database: 'urldb' });
    expect(resolveConnection({ ...base, explicit, dbname: 'plain' }).config).toMatchObject({ host: 'flaghost', database: 'plain' });
    // DATABASE_URL beats PG* variables for what it contains; PG* fill the rest.
    const mixed = resolveConnection({ ...base, env: { DATABASE_URL: 'postgres://h/db', PGUSER: 'pguser', PGHOST: 'pghost' } }).config;
    expect(mixed).toMatchObject({ host: 'h', user: 'pguser', database: 'db' });
  });

  it('maps sslmode like libpq: prefer (the default) asks for SSL on each connection, and goes on without it if refused', () => {
    const prefer = resolveConnection({ ...base, explicit: { host: 'db' } });
    // node-postgres has no prefer: ssl off for it, and a stream that asks the server (ssl-prefer.ts).
    expect(prefer.config.ssl).toBe(false);
    expect(typeof prefer.config.stream).toBe('function');
    const disable = resolveConnection({ ...base, dbname: 'host=db sslmode=disable' });
    expect(disable.config.ssl).toBe(false);
    expect(disable.config.stream).toBeUndefined();
    const req = resolveConnection({ ...base, dbname: 'host=db sslmode=require' });
    expect(req.config.ssl).toEqual({ rejectUnauthorized: false });
    expect(req.config.stream).toBeUndefined();
    const full = resolveConnection({
      ...base,
      dbname: 'host=db sslmode=verify-full sslrootcert=/ca.pem',
      readFile: (p) => {
        if (p === '/ca.pem' || p.startsWith('/home/u/.postgresql/')) return `pem:${p}`;
        throw new Error('ENOENT');
      },
    });
    expect(full.config.ssl).toEqual({ rejectUnauthorized: true, ca: 'pem:/ca.pem' });
    // A client certificate in ~/.postgresql is picked up, as libpq does.
    const withCert = resolveConnection({
      ...base,
      homeDir: '/home/u',
      dbname: 'host=db sslmode=require',
      readFile: (p) => {
        if (p.startsWith('/home/u/.postgresql/postgresql.')) return `pem:${p}`;
        throw new Error('ENOENT');
      },
    });
    expect(withCert.config.ssl).toEqual({
      rejectUnauthorized: false,
      cert: 'pem:/home/u/.postgresql/postgresql.crt',
      key: 'pem:/home/u/.postgresql/postgresql.key',
    });
    expect(() => resolveConnection({ ...base, dbname: 'sslmode=sometimes' })).toThrow('invalid sslmode value: "sometimes"');
  });

  it('verify-ca checks the chain against sslrootcert but not the host name; require with a root certificate does the same', () => {
    const readFile = (p: string) => {
      if (p === '/ca.pem' || p === '/home/u/.postgresql/root.crt') return `pem:${p}`;
      throw new Error('ENOENT');
    };
    const ca = resolveConnection({ ...base, homeDir: '/nowhere', dbname: 'host=db sslmode=verify-ca sslrootcert=/ca.pem', readFile });
    expect(ca.config.ssl).toMatchObject({ rejectUnauthorized: true, ca: 'pem:/ca.pem' });
    const identity = (ca.config.ssl as { checkServerIdentity?: () => unknown }).checkServerIdentity;
    expect(identity?.()).toBeUndefined(); // any host name is accepted
    expect(ca.config.stream).toBeUndefined();
    // ~/.postgresql/root.crt is the default root certificate; with it, require verifies the chain too.
    const req = resolveConnection({ ...base, homeDir: '/home/u', dbname: 'host=db sslmode=require', readFile });
    expect(req.config.ssl).toMatchObject({ rejectUnauthorized: true, ca: 'pem:/home/u/.postgresql/root.crt' });
    // sslrootcert=system: the system's CAs (Node's), nothing read.
    const system = resolveConnection({ ...base, homeDir: '/nowhere', dbname: 'host=db sslmode=verify-full sslrootcert=system', readFile });
    expect(system.config.ssl).toEqual({ rejectUnauthorized: true });
    // The same in a URI, in PGSSLMODE/PGSSLROOTCERT, and as the bridge's `database:` (one resolver for all).
    const uri = resolveConnection({ ...base, homeDir: '/nowhere', dbname: 'postgres://db/app?sslmode=verify-ca&sslrootcert=/ca.pem', readFile });
    expect(uri.config.ssl).toMatchObject({ rejectUnauthorized: true, ca: 'pem:/ca.pem' });
    const env = resolveConnection({
      ...base,
      homeDir: '/nowhere',
      env: { PGHOST: 'db', PGSSLMODE: 'verify-ca', PGSSLROOTCERT: '/ca.pem' },
      readFile,
    });
    expect(env.config.ssl).toMatchObject({ rejectUnauthorized: true, ca: 'pem:/ca.pem' });
    expect(() => databaseConnection('host=db sslmode=verify-ca sslrootcert=/no/such/ca.pem', {})).toThrow(
      /^database: ENOENT: no such file or directory, open '\/no\/such\/ca\.pem'/,
    );
  });

  it('the bridge and the commands resolve `database` the same way (a ConfigError naming it when libpq would refuse it)', () => {
    const r = databaseConnection('host=db port=6000 dbname=app user=me password=pw application_name=x', {});
    expect(r.config).toMatchObject({ host: 'db', port: 6000, database: 'app', user: 'me', password: 'pw', application_name: 'x', ssl: false });
    expect(databaseConnection(undefined, { DATABASE_URL: 'postgres://u@h:7/d' }).config).toMatchObject({
      host: 'h',
      port: 7,
      user: 'u',
      database: 'd',
    });
    expect(databaseConnection('postgres://u@h/d', { DATABASE_URL: 'postgres://other@elsewhere/x' }).config).toMatchObject({
      host: 'h',
      database: 'd',
    });
    expect(() => databaseConnection('host=db bogus=1', {})).toThrow(ConfigError);
    expect(() => databaseConnection('host=db bogus=1', {})).toThrow('database: invalid connection option "bogus"');
  });

  it("pglater's -h/-p/-U win over a connection string in -d (PQsetdbLogin), pglisten's do not (expand_dbname)", () => {
    const explicit = { host: 'flaghost', port: '1111' };
    const dbname = 'postgres://urluser@urlhost:2222/urldb';
    expect(resolveConnection({ ...base, explicit, dbname, explicitWins: true }).config).toMatchObject({
      host: 'flaghost',
      port: 1111,
      user: 'urluser',
      database: 'urldb',
    });
    expect(resolveConnection({ ...base, explicit, dbname }).config).toMatchObject({ host: 'urlhost', port: 2222 });
  });

  it('rejects a bad port, and turns client_encoding/connect_timeout into what node-postgres understands', () => {
    expect(() => resolveConnection({ ...base, explicit: { port: 'abc' } })).toThrow('invalid integer value "abc" for connection option "port"');
    const r = resolveConnection({ ...base, dbname: 'host=h connect_timeout=1 client_encoding=LATIN1 options=-cwork_mem=1MB' });
    expect(r.config).toMatchObject({ connectionTimeoutMillis: 2000, options: '-cwork_mem=1MB -c client_encoding=LATIN1' });
  });

  it('finds the password in .pgpass like libpq: first match, wildcards, escapes, socket = localhost', () => {
    const text = [
      '# comment',
      'other:5432:*:*:nope',
      'db.example:5432:app:bob:b\\:o\\\\b',
      '*:*:*:bob:fallback',
      'localhost:5433:*:alice:viasocket',
    ].join('\n');
    expect(pgpassLookup(text, { host: 'db.example', port: '5432', database: 'app', user: 'bob' })).toBe('b:o\\b');
    expect(pgpassLookup(text, { host: 'db.example', port: '5432', database: 'other', user: 'bob' })).toBe('fallback');
    expect(pgpassLookup(text, { host: '/var/run/postgresql', port: '5433', database: 'x', user: 'alice' })).toBe('viasocket');
    expect(pgpassLookup(text, { host: 'db.example', port: '5432', database: 'app', user: 'carol' })).toBeUndefined();
  });

  it('reads ~/.pgpass (or passfile/PGPASSFILE) only when it is private, and warns otherwise', () => {
    const files: Record<string, { text: string; mode: number }> = {
      '/home/u/.pgpass': { text: 'h:5432:*:bob:fromhome', mode: 0o100600 },
      '/etc/shared.pgpass': { text: 'h:5432:*:bob:shared', mode: 0o100644 },
    };
    const opts = { ...base, homeDir: '/home/u', readPassfile: (p: string) => files[p], explicit: { host: 'h', user: 'bob' } };
    expect(resolveConnection(opts).config.password).toBe('fromhome');
    expect(resolveConnection({ ...opts, env: { PGPASSWORD: 'env' } }).config.password).toBe('env');
    const shared = resolveConnection({ ...opts, env: { PGPASSFILE: '/etc/shared.pgpass' } });
    expect(typeof shared.config.password).toBe('function'); // none: node-postgres must not look again
    expect(shared.warnings).toEqual(['password file "/etc/shared.pgpass" has group or world access; permissions should be u=rw (0600) or less']);
  });

  it('words connection failures as libpq does, on one line', () => {
    const r = resolveConnection({ ...base, explicit: { host: '127.0.0.1', port: '1' } });
    expect(connectFailureMessage(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }), r)).toBe(
      'connection to server at "127.0.0.1", port 1 failed: Connection refused',
    );
    expect(connectFailureMessage(Object.assign(new Error('database "x" does not exist'), { severity: 'FATAL' }), r)).toBe(
      'connection to server at "127.0.0.1", port 1 failed: FATAL:  database "x" does not exist',
    );
    expect(connectFailureMessage(Object.assign(new Error('getaddrinfo ENOTFOUND nope'), { code: 'ENOTFOUND', hostname: 'nope' }), r)).toBe(
      'could not translate host name "nope" to address: Name or service not known',
    );
    expect(connectFailureMessage(new Error('two\nlines'), r)).not.toContain('\n');
  });
});
