import { describe, expect, it } from 'vitest';
import { actionSql, controlsTransactions } from '../../src/scheduler/executor.js';

describe('scheduled actions', () => {
  it('recognises transaction control, which must not run inside the batch transaction', () => {
    for (const sql of [
      'commit',
      'ROLLBACK',
      ' begin; insert into t values (1); commit',
      'select 1; end',
      'start transaction',
      'savepoint a',
      'abort',
      "prepare transaction 'x'",
    ]) {
      expect(controlsTransactions(sql), sql).toBe(true);
    }
    for (const sql of [
      'select 1',
      'insert into commits values (1)',
      'select begin_date from t',
      'delete from spool where expires < now()',
      'vacuum t',
    ]) {
      expect(controlsTransactions(sql), sql).toBe(false);
    }
  });
  it('publishes events with sidekick.publish, quoting every value', () => {
    const due = new Date('2024-01-01T00:00:00Z');
    expect(actionSql({ sql: null, channel: "it's", payload: null, key: null, name: 'n', id: '1' }, due)).toBe(
      `SELECT sidekick.publish('it''s', '{"schedule":"n","due_at":"2024-01-01T00:00:00.000Z"}'::jsonb, NULL)`,
    );
    expect(actionSql({ sql: null, channel: 'c', payload: { a: "'" }, key: 'k', name: null, id: '7' }, due)).toBe(
      `SELECT sidekick.publish('c', '{"a":"''"}'::jsonb, 'k')`,
    );
    expect(actionSql({ sql: 'select 1', channel: null, payload: null, key: null, name: null, id: '1' }, due)).toBe('select 1');
  });
});
