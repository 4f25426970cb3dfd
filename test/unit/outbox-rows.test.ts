import { describe, expect, it } from 'vitest';
import { eventRecord, outboxEvents, rowEnvelope, type OutboxRow } from '../../src/outbox/queries.js';

const base: OutboxRow = {
  id: '10',
  origin_id: null,
  origin_uid: null,
  target: null,
  part: 3,
  xid: '777',
  at: new Date('2026-01-02T03:04:05.678Z'),
  source: 'table',
  channel: 'public.t',
  op: 'INSERT',
  schema_name: 'public',
  table_name: 't',
  key_columns: ['id'],
  event_ids: null,
  new: null,
  old: null,
  keys: null,
  key: null,
  payload: null,
  running_bytes: '0',
  running_events: '0',
};

const INST = 'a1b2c3d4e5f60718';

describe('outbox rows → events', () => {
  it('one row of a statement (or a row-level trigger): one event whose id is the row id', () => {
    const [e, ...rest] = outboxEvents({ ...base, new: { id: 5, v: 'a' } }, INST);
    expect(rest).toEqual([]);
    expect(e).toEqual({
      id: 'a1b2c3d4e5f60718-10',
      seq: '10',
      source: 'table',
      channel: 'public.t',
      op: 'INSERT',
      schema: 'public',
      table: 't',
      key: '5',
      new: { id: 5, v: 'a' },
      old: null,
      at: '2026-01-02T03:04:05.678Z',
      txid: '777',
    });
  });

  it('a chunk of a statement: one event per element, with its own id, in order', () => {
    const events = outboxEvents(
      {
        ...base,
        op: 'UPDATE',
        event_ids: ['7', '8'],
        new: [
          { id: 1, v: 2 },
          { id: 2, v: 3 },
        ],
        old: [
          { id: 1, v: 1 },
          { id: 2, v: 2 },
        ],
      },
      INST,
    );
    expect(events.map((e) => [e.id, e.seq, e.key, e.new, e.old])).toEqual([
      ['a1b2c3d4e5f60718-7', '7', '1', { id: 1, v: 2 }, { id: 1, v: 1 }],
      ['a1b2c3d4e5f60718-8', '8', '2', { id: 2, v: 3 }, { id: 2, v: 2 }],
    ]);
  });

  it('DELETE reads the key from the old image; given key values win over the image', () => {
    expect(outboxEvents({ ...base, op: 'DELETE', old: { id: 9 } }, INST)[0]?.key).toBe('9');
    expect(outboxEvents({ ...base, op: 'UPDATE', new: { v: 1 }, old: { v: 0 }, keys: [42] }, INST)[0]?.key).toBe('42');
    expect(
      outboxEvents(
        {
          ...base,
          event_ids: ['1', '2'],
          new: [{ v: 1 }, { v: 2 }],
          keys: [
            [1, 'a'],
            [2, 'b'],
          ],
          key_columns: ['a', 'b'],
        },
        INST,
      ).map((e) => e.key),
    ).toEqual(['[1,"a"]', '[2,"b"]']);
  });

  it('a dead letter sent back keeps its original id and key', () => {
    const [e] = outboxEvents({ ...base, id: '99', origin_id: '7', target: 'hook', key_columns: null, new: { id: 1 }, keys: 'k-1' }, INST);
    expect(e).toMatchObject({ id: 'a1b2c3d4e5f60718-7', seq: '7', key: 'k-1', new: { id: 1 } });
  });

  it('a published event: its payload, key and id', () => {
    const [e] = outboxEvents(
      { ...base, source: 'publish', channel: 'jobs', op: null, schema_name: null, table_name: null, key_columns: null, key: 'k', payload: { n: 1 } },
      INST,
    );
    expect(e).toEqual({
      id: 'a1b2c3d4e5f60718-10',
      seq: '10',
      source: 'publish',
      channel: 'jobs',
      key: 'k',
      payload: { n: 1 },
      at: '2026-01-02T03:04:05.678Z',
      txid: '777',
    });
  });

  it('ids are the installation and the number: two installations never share one, the number stays as seq', () => {
    const [a] = outboxEvents({ ...base, new: { id: 1 } }, 'aaaaaaaaaaaaaaaa');
    const [b] = outboxEvents({ ...base, new: { id: 1 } }, 'bbbbbbbbbbbbbbbb');
    expect(a?.id).not.toBe(b?.id);
    expect([a?.seq, b?.seq]).toEqual(['10', '10']);
  });

  it('a NOTIFY dead letter sent back keeps its UUID, has no number and no transaction', () => {
    const [e] = outboxEvents(
      {
        ...base,
        source: 'notify',
        channel: 'jobs',
        op: null,
        schema_name: null,
        table_name: null,
        key_columns: null,
        origin_uid: '6f1c0e9e-8d4c-4a8e-9a53-2f4b8f0a1c11',
        target: 'hook',
        payload: 'hi',
      },
      INST,
    );
    expect(e).toEqual({
      id: '6f1c0e9e-8d4c-4a8e-9a53-2f4b8f0a1c11',
      source: 'notify',
      channel: 'jobs',
      payload: 'hi',
      at: '2026-01-02T03:04:05.678Z',
    });
  });

  it('an event goes into a store and comes back the same, \\u0000 and unpaired surrogates included', () => {
    const [e] = outboxEvents({ ...base, new: JSON.parse('{"id":1,"a":"\\u0000","b":"\\ud800"}') }, INST);
    const record = eventRecord(e as never);
    // The images travel as JSON text (cast to json in SQL): escapes kept, never decoded on the way.
    expect(record.new).toBe('{"id":1,"a":"\\u0000","b":"\\ud800"}');
    const back = rowEnvelope(
      { ...record, at: new Date(record.at as string), new: JSON.parse(record.new as string), old: null, payload: null } as never,
      INST,
    );
    expect(back).toEqual(e);
  });
});
