import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import type { Bridge } from '../../src/bridge.js';
import type { CommandIO } from '../../src/commands/io.js';
import { statusCommand, type Status } from '../../src/commands/status.js';
import { FatalError, RetriableError } from '../../src/errors.js';
import { capturedClient } from '../support/bridge.js';
import { waitFor, type TestDatabase } from '../support/db.js';
import { useTestBed } from '../support/bed.js';
import { createMemorySinks } from '../support/memory-sink.js';

function io(): CommandIO & { out: () => string; err: () => string } {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (d) => {
    out += String(d);
  });
  stderr.on('data', (d) => {
    err += String(d);
  });
  return { stdout, stderr, env: {}, signal: new AbortController().signal, out: () => out, err: () => err };
}

async function status(url: string): Promise<Status> {
  const term = io();
  expect(await statusCommand({ database: url, json: true }, term)).toBe(0);
  return JSON.parse(term.out()) as Status;
}

describe('sidekick status (real PostgreSQL)', () => {
  const bed = useTestBed();
  let db: TestDatabase | undefined;
  let _bridge: Bridge | undefined;

  it('reports the backlog, its age, dead letters per sink, the drain and its connections; --json and tables', async () => {
    db = await bed.database();
    const c = await capturedClient(db, 'CREATE TABLE orders (id int PRIMARY KEY, status text)', [{ table: 'public.orders' }]);

    // Nothing running yet: the events wait in the outbox, and no drain holds a partition.
    await c.query(`INSERT INTO orders SELECT g, 'new' FROM generate_series(1, 30) g`);
    let s = await status(db.url);
    // One 30-row statement: its first two rows alone, the other 28 in one chunk.
    expect(s.outbox).toMatchObject({ events: 30, rows: 3, estimated: false });
    expect(s.outbox.oldestAgeSeconds).toBeGreaterThan(0);
    expect(s.drains).toEqual({ instances: 0, partitionsOwned: 0, partitions: 16 });
    expect(s.schema).toMatchObject({ upToDate: true });
    expect(s.schema.version).toBe(s.schema.latest);

    // A bridge whose sink "down" is unreachable and whose sink "broken" rejects every event.
    const memory = createMemorySinks();
    memory.get('down').behaviour = () => ({ ok: false, error: new RetriableError('DOWN', 'test: down', { unavailable: true }) });
    memory.get('broken').behaviour = () => ({ ok: false, error: new FatalError('BAD', 'test: rejected') });
    _bridge = await bed.bridge(
      db.url,
      {
        outbox: { checkpointAfter: 100 },
        sinks: { down: { type: 'memory' }, broken: { type: 'memory' } },
        routes: [{ from: 'public.*', to: ['down', 'broken'] }],
      },
      [memory.definition],
    );
    await waitFor(async () => {
      s = await status(db!.url);
      const down = s.sinks.find((k) => k.sink === 'down');
      const broken = s.sinks.find((k) => k.sink === 'broken');
      return s.outbox.events === 0 && down?.backlog === 30 && broken?.deadLetters === 30;
    }, 'the events in "down"\'s backlog and 30 dead letters for "broken"');
    expect(s.sinks.find((k) => k.sink === 'down')?.backlogOldestAgeSeconds).toBeGreaterThan(0);
    expect(s.drains).toEqual({ instances: 1, partitionsOwned: 16, partitions: 16 });
    expect(s.connections.map((k) => k.applicationName)).toContain('pg-sidekick drain');

    const term = io();
    expect(await statusCommand({ database: db.url }, term)).toBe(0);
    const text = term.out();
    expect(text).toMatch(/outbox +0 event\(s\) waiting/);
    expect(text).toMatch(/drains +1 instance\(s\), 16\/16 partitions owned/);
    expect(text).toMatch(/^ +broken +0 +- +30$/m);
    expect(text).toMatch(/^ +down +30 +[\d.]+ (s|min) +0$/m);
    expect(text).toMatch(/^ +pg-sidekick drain +1 /m);
  });

  it('exits 1 with the reason when the schema is not installed or the database is unreachable', async () => {
    db = await bed.database();
    const term = io();
    expect(await statusCommand({ database: db.url }, term)).toBe(1);
    expect(term.err()).toMatch(/pg-sidekick is not installed in .*: run `sidekick install`/);
    expect(term.out()).toBe('');

    const away = io();
    expect(await statusCommand({ database: 'postgres://postgres@127.0.0.1:1/nowhere' }, away)).toBe(1);
    expect(away.err()).toMatch(/cannot connect to 127\.0\.0\.1:1\/nowhere: .*ECONNREFUSED/);
  });
});
