import { describe, expect, it } from 'vitest';
import { outboxEvents, type OutboxRow } from '../../src/outbox/queries.js';

const base: OutboxRow = {
  id: '10', origin_id: null, target: null, part: 3, xid: '777', at: new Date('2026-01-02T03:04:05.678Z'),
  source: 'table', channel: 'public.t', op: 'INSERT', schema_name: 'public', table_name: 't',
  key_columns: ['id'], event_ids: null, new: null, old: null, keys: null, key: null, payload: null,
  running_bytes: '0', running_events: '0',
};

describe('outbox rows → events', () => {
  it('one row of a statement (or a row-level trigger): one event whose id is the row id', () => {
    const [e, ...rest] = outboxEvents({ ...base, new: { id: 5, v: 'a' } });
    expect(rest).toEqual([]);
    expect(e).toEqual({
      id: '10', source: 'table', channel: 'public.t', op: 'INSERT', schema: 'public', table: 't', key: '5',
      new: { id: 5, v: 'a' }, old: null, at: '2026-01-02T03:04:05.678Z', txid: '777',
    });
  });

  it('a chunk of a statement: one event per element, with its own id, in order', () => {
    const events = outboxEvents({
      ...base, op: 'UPDATE', event_ids: ['7', '8'], new: [{ id: 1, v: 2 }, { id: 2, v: 3 }], old: [{ id: 1, v: 1 }, { id: 2, v: 2 }],
    });
    expect(events.map((e) => [e.id, e.key, e.new, e.old])).toEqual([
      ['7', '1', { id: 1, v: 2 }, { id: 1, v: 1 }],
      ['8', '2', { id: 2, v: 3 }, { id: 2, v: 2 }],
    ]);
  });

  it('DELETE reads the key from the old image; given key values win over the image', () => {
    expect(outboxEvents({ ...base, op: 'DELETE', old: { id: 9 } })[0]?.key).toBe('9');
    expect(outboxEvents({ ...base, op: 'UPDATE', new: { v: 1 }, old: { v: 0 }, keys: [42] })[0]?.key).toBe('42');
    expect(outboxEvents({ ...base, event_ids: ['1', '2'], new: [{ v: 1 }, { v: 2 }], keys: [[1, 'a'], [2, 'b']], key_columns: ['a', 'b'] }).map((e) => e.key))
      .toEqual(['[1,"a"]', '[2,"b"]']);
  });

  it('a dead letter sent back keeps its original id and key', () => {
    const [e] = outboxEvents({ ...base, id: '99', origin_id: '7', target: 'hook', key_columns: null, new: { id: 1 }, keys: 'k-1' });
    expect(e).toMatchObject({ id: '7', key: 'k-1', new: { id: 1 } });
  });

  it('a published event: its payload, key and id', () => {
    const [e] = outboxEvents({ ...base, source: 'publish', channel: 'jobs', op: null, schema_name: null, table_name: null, key_columns: null, key: 'k', payload: { n: 1 } });
    expect(e).toEqual({ id: '10', source: 'publish', channel: 'jobs', key: 'k', payload: { n: 1 }, at: '2026-01-02T03:04:05.678Z', txid: '777' });
  });
});
