import { describe, expect, it } from 'vitest';
import type { Delivery } from '../../src/dispatcher/index.js';
import type { Envelope } from '../../src/envelope.js';
import { FatalError } from '../../src/errors.js';
import { createLedger, type Job, type Ledger, type SinkMode } from '../../src/outbox/ledger.js';

const DELIVERED: Delivery = { status: 'delivered', attempts: 1 };
const DEAD: Delivery = { status: 'dead', attempts: 3, error: new FatalError('HTTP_400', 'bad request') };

const event = (seq: number): Envelope => ({
  id: `i-${seq}`,
  seq: String(seq),
  source: 'table',
  channel: 'public.t',
  key: String(seq),
  at: '2026-01-01T00:00:00.000Z',
});

/** A ledger whose deliveries are kept for the test to settle; the sinks' mode changes are recorded. */
function setup(options: Partial<{ sinkBuffer: number; checkpointAfter: number; sinks: string[] }> = {}) {
  const jobs: Job[] = [];
  const modes: [string, SinkMode][] = [];
  const ledger: Ledger = createLedger(
    { sinks: options.sinks ?? ['a', 'b'], sinkBuffer: options.sinkBuffer ?? 100, checkpointAfter: options.checkpointAfter ?? 1000, partitions: 16 },
    { deliver: (job) => jobs.push(job), modeChanged: (sink, mode) => modes.push([sink, mode]) },
  );
  const job = (sink: string, seq: number) => jobs.find((j) => j.sink === sink && j.envelope.seq === String(seq)) as Job;
  return { ledger, jobs, modes, job };
}

describe('outbox ledger (pure: no database)', () => {
  it('an entry goes once every sink it was routed to has its events', () => {
    const { ledger, jobs, job } = setup();
    ledger.admit({ id: 10, part: 3, readAt: 0 }, [{ envelope: event(10), sinks: ['a', 'b'] }]);
    expect(jobs.map((j) => j.sink)).toEqual(['a', 'b']);
    expect(ledger.load(3)).toBe(1);
    job('a', 10).delivered(DELIVERED);
    expect(ledger.take()).toBeUndefined();
    job('b', 10).delivered(DELIVERED);
    const batch = ledger.take();
    expect(batch).toMatchObject({ spills: [], dead: [], doneBacklog: [], doneEntries: [10] });
    ledger.committed(batch!, []);
    expect(ledger.load(3)).toBe(0);
    expect([...ledger.entryIds()]).toEqual([]);
  });

  it('a dead event is a dead letter of its sink, and settles the pair', () => {
    const { ledger, job } = setup();
    ledger.admit({ id: 1, part: 0, readAt: 0 }, [{ envelope: event(1), sinks: ['a'] }]);
    job('a', 1).delivered(DEAD);
    expect(ledger.take()).toMatchObject({ dead: [{ sink: 'a', attempts: 3, code: 'HTTP_400', error: 'bad request' }], doneEntries: [1] });
  });

  it('a sink not in the config (a dead letter sent back to it) gets a dead letter at once', () => {
    const { ledger, jobs } = setup();
    ledger.admit({ id: 1, part: 0, readAt: 0 }, [{ envelope: event(1), sinks: ['gone'] }]);
    expect(jobs).toEqual([]);
    expect(ledger.take()).toMatchObject({ dead: [{ sink: 'gone', code: 'SINK_UNKNOWN' }], doneEntries: [1] });
  });

  it('a sink with sinkBuffer events in memory is backlogged: its further events are spilled, the others go on', () => {
    const { ledger, jobs, modes } = setup({ sinkBuffer: 2 });
    for (let i = 1; i <= 3; i++) ledger.admit({ id: i, part: 0, readAt: 0 }, [{ envelope: event(i), sinks: ['a', 'b'] }]);
    expect(jobs.filter((j) => j.sink === 'a').map((j) => j.envelope.seq)).toEqual(['1', '2']);
    expect(modes).toEqual([
      ['a', 'backlog'],
      ['b', 'backlog'],
    ]);
    const batch = ledger.take()!;
    expect(batch.spills.map((s) => [s.sink, s.envelope.seq, s.job])).toEqual([
      ['a', '3', undefined],
      ['b', '3', undefined],
    ]);
    expect(batch.doneEntries).toEqual([3]);
    expect(ledger.backlogRoom('a')).toBe(0);
  });

  it('checkpoints an event a sink holds past checkpointAfter: the entry goes, the job stays live and settles its backlog row', () => {
    const { ledger, job } = setup({ checkpointAfter: 1000 });
    ledger.admit({ id: 7, part: 2, readAt: 0 }, [{ envelope: event(7), sinks: ['a', 'b'] }]);
    job('a', 7).delivered(DELIVERED);
    ledger.checkpoint(999);
    expect(ledger.take()).toBeUndefined();
    expect(ledger.nextCheckpoint(999)).toBe(1);
    ledger.checkpoint(1000);
    const batch = ledger.take()!;
    expect(batch.spills.map((s) => [s.sink, s.envelope.seq, s.entry])).toEqual([['b', '7', 7]]);
    expect(batch.doneEntries).toEqual([7]);
    ledger.committed(batch, [501]);
    job('b', 7).delivered(DELIVERED);
    const next = ledger.take()!;
    expect(next.doneBacklog).toEqual([501]);
    ledger.committed(next, []);
    expect(ledger.load(2)).toBe(0);
  });

  it('a checkpoint copy whose event settles before it is written is not written', () => {
    const { ledger, job } = setup();
    ledger.admit({ id: 1, part: 0, readAt: 0 }, [{ envelope: event(1), sinks: ['a'] }]);
    ledger.checkpoint(5000);
    job('a', 1).delivered(DELIVERED);
    const batch = ledger.take()!;
    expect(batch.spills).toEqual([]);
    expect(batch.doneEntries).toEqual([1]);
    ledger.committed(batch, []);
    expect(ledger.load(0)).toBe(0);
  });

  it('an outcome that arrives while the copy is being written is applied once it is written', () => {
    const { ledger, job } = setup();
    ledger.admit({ id: 1, part: 0, readAt: 0 }, [{ envelope: event(1), sinks: ['a'] }]);
    ledger.checkpoint(5000);
    const batch = ledger.take()!;
    job('a', 1).delivered(DELIVERED);
    expect(ledger.dirty).toBe(false);
    ledger.committed(batch, [42]);
    expect(ledger.take()).toMatchObject({ doneBacklog: [42] });
  });

  it('a copy the backlog refused: the job stays live and its entry stays until the event settles', () => {
    const { ledger, job } = setup();
    ledger.admit({ id: 1, part: 0, readAt: 0 }, [{ envelope: event(1), sinks: ['a'] }]);
    ledger.checkpoint(5000);
    const batch = ledger.take()!;
    expect(batch.doneEntries).toEqual([1]);
    // The source kept entry 1 (see Spill.entry): the ledger keeps it too.
    ledger.committed(batch, [undefined]);
    expect([...ledger.entryIds()]).toEqual([1]);
    ledger.checkpoint(10_000);
    expect(ledger.take()).toBeUndefined();
    job('a', 1).delivered(DELIVERED);
    expect(ledger.take()).toMatchObject({ spills: [], doneEntries: [1] });
  });

  it('a backlogged sink is fed from its backlog in order, once per row, and goes live when a read comes back short', () => {
    const { ledger, jobs, modes } = setup({ sinkBuffer: 10 });
    ledger.backlogFound(['a', 'unknown-is-ignored']);
    expect(modes).toEqual([['a', 'backlog']]);
    expect(ledger.backlogRoom('a')).toBe(10);
    expect(ledger.admitBacklog('a', 5, 1, event(1))).toBe(true);
    expect(ledger.admitBacklog('a', 5, 1, event(1))).toBe(false);
    expect(ledger.backlogCursor('a')).toBe(5);
    expect(ledger.backlogRoom('a')).toBe(9);
    ledger.backlogDrained('a');
    expect(ledger.mode('a')).toBe('live');
    jobs[0]!.delivered(DELIVERED);
    expect(ledger.take()).toMatchObject({ doneBacklog: [5] });
  });

  it('after reset() outcomes of the older generation change nothing; stopped deliveries leave their row', () => {
    const { ledger, job } = setup();
    ledger.admit({ id: 1, part: 0, readAt: 0 }, [{ envelope: event(1), sinks: ['a'] }]);
    ledger.admit({ id: 2, part: 0, readAt: 0 }, [{ envelope: event(2), sinks: ['b'] }]);
    job('b', 2).delivered({ status: 'aborted', attempts: 0 });
    expect(ledger.take()).toBeUndefined();
    ledger.reset();
    job('a', 1).delivered(DELIVERED);
    expect(ledger.take()).toBeUndefined();
    expect(ledger.load(0)).toBe(0);
    expect(ledger.entryEvents).toBe(0);
  });
});
