import { describe, expect, it } from 'vitest';
import { compileAllowEntry, createAllowList, parseLaterPayload } from '../../src/scheduler/payload.js';

describe('pglater payload "<seconds> <sql>"', () => {
  const accepted: [string, number, string][] = [
    ['30 select some_function()', 30, 'select some_function()'],
    ['0 select 1', 0, 'select 1'],
    ['1 insert into t values (1)', 1, 'insert into t values (1)'],
    // sscanf's %d: leading whitespace and a sign
    ['   5 select 1', 5, 'select 1'],
    ['\t\n5 select 1', 5, 'select 1'],
    ['+5 select 1', 5, 'select 1'],
    ['-5 select 1', -5, 'select 1'],
    ['-0 select 1', 0, 'select 1'],
    ['007 select 1', 7, 'select 1'],
    // the " " of "%d %n" eats every whitespace character, of any kind and number
    ['5\tselect 1', 5, 'select 1'],
    ['5\n\nselect 1', 5, 'select 1'],
    ['5 \r\n\v\f select 1', 5, 'select 1'],
    // the rest is verbatim: inner and trailing whitespace, several statements, newlines, comments, quotes
    ['2 select 1;  select 2  ', 2, 'select 1;  select 2  '],
    ['2 select $$a\nb$$ -- trailing comment', 2, 'select $$a\nb$$ -- trailing comment'],
    ["2 select 'ünïcode ✓'", 2, "select 'ünïcode ✓'"],
    ['2147483647 select 1', 2147483647, 'select 1'],
    ['-2147483648 select 1', -2147483648, 'select 1'],
    // not SQL we judge: whatever follows is the statement (it fails when it runs, as in pglater)
    ['5 x', 5, 'x'],
    ['5 5', 5, '5'],
  ];
  it.each(accepted)('accepts %j', (payload, delay, sql) => {
    expect(parseLaterPayload(payload)).toEqual({ ok: true, delaySeconds: delay, sql });
  });

  const rejected: [string, RegExp][] = [
    ['', /expected "<seconds> <sql>"/],
    ['   ', /expected/],
    ['select 1', /expected/],
    ['abc 5 select 1', /expected/],
    ['- 5 select 1', /expected/],
    ['+-5 select 1', /expected/],
    ['--5 select 1', /expected/],
    ['five select 1', /expected/],
    // pglater read the number and ran the rest ("select 1", ".5 select 1", "x10 select 1"): refused here
    ['30select 1', /expected whitespace after the number of seconds, found "s"/],
    ['1.5 select 1', /found "\."/],
    ['0x10 select 1', /found "x"/],
    ['1e3 select 1', /found "e"/],
    ['5,select 1', /found ","/],
    // nothing to run (pglater scheduled an empty command, then exited when it failed)
    ['30', /no SQL/],
    ['30 ', /no SQL/],
    ['30 \t\n ', /no SQL/],
    ['-1', /no SQL/],
    // beyond a C int (undefined behaviour in pglater)
    ['2147483648 select 1', /out of range/],
    ['-2147483649 select 1', /out of range/],
    ['99999999999999999999 select 1', /out of range/],
    // whitespace sscanf does not skip
    ['\u00a05 select 1', /expected/],
    ['{"seconds": 5}', /expected/],
  ];
  it.each(rejected)('rejects %j', (payload, reason) => {
    const r = parseLaterPayload(payload);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.reason).toMatch(reason);
  });
});

describe('allow-list', () => {
  it('allows everything without a list, and only matches with one', () => {
    expect(createAllowList(undefined)).toBeUndefined();
    expect(createAllowList([])).toBeUndefined();
    const allow = createAllowList(['^select my_schema\\.', '^delete from spool '])!;
    expect(allow('select my_schema.f()')).toBe(true);
    expect(allow('delete from spool where expires < now()')).toBe(true);
    expect(allow('select other.f()')).toBe(false);
    expect(allow('SELECT my_schema.f()')).toBe(false);
    expect(allow(' select my_schema.f()')).toBe(false);
  });
  it('takes /pattern/flags', () => {
    const allow = createAllowList(['/^select my_schema\\./i'])!;
    expect(allow('SELECT my_schema.f()')).toBe(true);
    // g/y would make RegExp.test stateful (alternating answers); they are dropped
    const g = compileAllowEntry('/^select/gi');
    expect([g.test('select'), g.test('select'), g.test('select')]).toEqual([true, true, true]);
  });
  it('throws on a bad pattern', () => {
    expect(() => compileAllowEntry('(')).toThrow();
  });
});
