import { describe, expect, it } from 'vitest';
import {
  addInterval,
  cronRecurrence,
  intervalParts,
  intervalRecurrence,
  nextAfterRun,
  onceRecurrence,
  planOccurrence,
  recurrenceOf,
} from '../../src/scheduler/recurrence.js';

const d = (iso: string) => new Date(iso);
const MIN = 60_000;

describe('addInterval (PostgreSQL timestamptz + interval)', () => {
  it('adds time as elapsed time', () => {
    expect(addInterval(d('2024-01-01T00:00:00Z'), { months: 0, days: 0, ms: 20 * MIN }, 'UTC')).toEqual(d('2024-01-01T00:20:00Z'));
  });
  it('clamps months to the last day, as PostgreSQL does', () => {
    expect(addInterval(d('2024-01-31T10:00:00Z'), { months: 1, days: 0, ms: 0 }, 'UTC')).toEqual(d('2024-02-29T10:00:00Z'));
    expect(addInterval(d('2023-01-31T10:00:00Z'), { months: 1, days: 0, ms: 0 }, 'UTC')).toEqual(d('2023-02-28T10:00:00Z'));
    expect(addInterval(d('2023-11-30T10:00:00Z'), { months: 14, days: 0, ms: 0 }, 'UTC')).toEqual(d('2025-01-30T10:00:00Z'));
  });
  it('keeps the local time of day across a daylight-saving change for days, not for hours', () => {
    // Europe/Paris went to summer time on 2024-03-31 at 02:00 (+1 → +2).
    const before = d('2024-03-30T08:00:00Z'); // 09:00 in Paris
    expect(addInterval(before, { months: 0, days: 1, ms: 0 }, 'Europe/Paris')).toEqual(d('2024-03-31T07:00:00Z')); // 09:00 CEST
    expect(addInterval(before, { months: 0, days: 0, ms: 24 * 60 * MIN }, 'Europe/Paris')).toEqual(d('2024-03-31T08:00:00Z'));
  });
  it('reads a node-postgres interval', () => {
    expect(intervalParts({ years: 1, months: 2, days: 3, hours: 4, minutes: 5, seconds: 6, milliseconds: 7 })).toEqual({
      months: 14,
      days: 3,
      ms: ((4 * 60 + 5) * 60 + 6) * 1000 + 7,
    });
    expect(intervalParts({ minutes: 20 })).toEqual({ months: 0, days: 0, ms: 20 * MIN });
  });
});

describe('recurrences', () => {
  it('interval: after and latest', () => {
    const r = intervalRecurrence({ months: 0, days: 0, ms: 20 * MIN }, 'UTC');
    const from = d('2024-01-01T00:00:00Z');
    expect(r.after(from)).toEqual(d('2024-01-01T00:20:00Z'));
    expect(r.latest(from, d('2024-01-01T01:05:00Z'), 2)).toEqual([d('2024-01-01T01:00:00Z'), d('2024-01-01T00:40:00Z')]);
    expect(r.latest(from, d('2024-01-01T00:05:00Z'), 5)).toEqual([from]);
  });
  it('calendar interval: latest walks the calendar', () => {
    const r = intervalRecurrence({ months: 1, days: 0, ms: 0 }, 'UTC');
    expect(r.latest(d('2024-01-31T00:00:00Z'), d('2024-04-01T00:00:00Z'), 10)).toEqual([
      d('2024-03-29T00:00:00Z'),
      d('2024-02-29T00:00:00Z'),
      d('2024-01-31T00:00:00Z'),
    ]);
  });
  it('cron with seconds and with a time zone', () => {
    const every = cronRecurrence('*/5 * * * * *', 'UTC');
    expect(every.after(d('2024-01-01T00:00:00Z'))).toEqual(d('2024-01-01T00:00:05Z'));
    expect(every.latest(d('2024-01-01T00:00:00Z'), d('2024-01-01T00:00:10Z'), 10)).toEqual([
      d('2024-01-01T00:00:10Z'),
      d('2024-01-01T00:00:05Z'),
      d('2024-01-01T00:00:00Z'),
    ]);
    // many occurrences: read backwards from the end
    expect(every.latest(d('2024-01-01T00:00:00Z'), d('2024-01-02T00:00:00Z'), 2)).toEqual([d('2024-01-02T00:00:00Z'), d('2024-01-01T23:59:55Z')]);
    const paris = cronRecurrence('0 3 * * *', 'Europe/Paris');
    expect(paris.after(d('2024-07-01T00:00:00Z'))).toEqual(d('2024-07-01T01:00:00Z'));
  });
  it('rejects bad cron expressions and zones', () => {
    expect(() => cronRecurrence('not cron', 'UTC')).toThrow();
    expect(() => cronRecurrence('* * * * *', 'Not/AZone')).toThrow();
    expect(() => recurrenceOf({ runAt: null, every: { minutes: 1 }, cron: null, timeZone: 'Not/AZone' }, null)).toThrow();
  });
});

describe('missed-run policy', () => {
  const every20 = intervalRecurrence({ months: 0, days: 0, ms: 20 * MIN }, 'UTC');
  const due = d('2024-01-01T00:00:00Z');
  const base = { recurrence: every20, due, cap: 100, graceMs: MIN, retry: false } as const;

  it('an occurrence on time runs, whatever the policy', () => {
    for (const missed of ['skip', 'once', 'all'] as const) {
      expect(planOccurrence({ ...base, missed, now: d('2024-01-01T00:00:00.050Z') })).toEqual({ run: due, skipped: null, resumeAfter: null });
    }
  });

  // The bridge was down for a day: 72 occurrences due, the newest at 23:40, it is now 23:50.
  const now = d('2024-01-01T23:50:00Z');
  it('all: every occurrence, oldest first', () => {
    expect(planOccurrence({ ...base, missed: 'all', now })).toEqual({ run: due, skipped: null, resumeAfter: null });
  });
  it('all with a cap: only the most recent ones', () => {
    const plan = planOccurrence({ ...base, missed: 'all', cap: 3, now });
    expect(plan.run).toEqual(d('2024-01-01T23:00:00Z'));
    expect(plan.skipped).toMatchObject({ from: due, to: d('2024-01-01T22:40:00Z'), count: 69 });
  });
  it('once: the newest, once for all', () => {
    const plan = planOccurrence({ ...base, missed: 'once', now });
    expect(plan.run).toEqual(d('2024-01-01T23:40:00Z'));
    expect(plan.skipped).toMatchObject({ from: due, to: d('2024-01-01T23:20:00Z'), count: 71 });
  });
  it('skip: nothing late runs', () => {
    const plan = planOccurrence({ ...base, missed: 'skip', now });
    expect(plan.run).toBeNull();
    expect(plan.skipped).toMatchObject({ from: due, to: d('2024-01-01T23:40:00Z'), count: 72 });
    expect(plan.resumeAfter).toEqual(d('2024-01-01T23:40:00Z'));
  });
  it('skip: the newest still runs when it is not late itself', () => {
    const plan = planOccurrence({ ...base, missed: 'skip', now: d('2024-01-01T00:20:30Z') });
    expect(plan.run).toEqual(d('2024-01-01T00:20:00Z'));
    expect(plan.skipped).toMatchObject({ from: due, to: due, count: 1 });
  });
  it('a one-shot that is late: skip drops it, once runs it', () => {
    const once = onceRecurrence(due);
    const late = d('2024-01-01T01:00:00Z');
    expect(planOccurrence({ ...base, recurrence: once, missed: 'skip', now: late })).toMatchObject({ run: null, skipped: { count: 1 } });
    expect(planOccurrence({ ...base, recurrence: once, missed: 'once', now: late })).toMatchObject({ run: due, skipped: null });
  });
  it('with overlap queue, occurrences queued behind a long run are not missed (unless late)', () => {
    const now2 = d('2024-01-01T00:40:10Z'); // 00:00, 00:20 and 00:40 are due, none more than a minute… but 00:00 is late
    expect(planOccurrence({ ...base, missed: 'once', overlap: 'queue', now: d('2024-01-01T00:00:30Z') }).run).toEqual(due);
    expect(planOccurrence({ ...base, missed: 'once', overlap: 'queue', now: now2 }).run).toEqual(d('2024-01-01T00:40:00Z'));
    const quick = intervalRecurrence({ months: 0, days: 0, ms: 200 }, 'UTC');
    const q = { ...base, recurrence: quick, missed: 'once' as const, now: d('2024-01-01T00:00:00.500Z') };
    expect(planOccurrence({ ...q, overlap: 'queue' }).run).toEqual(due);
    expect(planOccurrence({ ...q, overlap: 'skip' }).run).toEqual(d('2024-01-01T00:00:00.400Z'));
  });
  it('a retry always runs its occurrence', () => {
    expect(planOccurrence({ ...base, missed: 'skip', now, retry: true })).toEqual({ run: due, skipped: null, resumeAfter: null });
  });
  it('cron backlog with a zone does not walk every occurrence', () => {
    const perSecond = cronRecurrence('* * * * * *', 'Europe/Paris');
    const started = Date.now();
    const plan = planOccurrence({ ...base, recurrence: perSecond, missed: 'all', cap: 5, now: d('2024-01-02T00:00:00Z') });
    expect(plan.run).toEqual(d('2024-01-01T23:59:56Z'));
    expect(plan.skipped?.atLeast).toBe(true);
    expect(Date.now() - started).toBeLessThan(10_000);
  });
});

describe('overlap policy', () => {
  const every1m = intervalRecurrence({ months: 0, days: 0, ms: MIN }, 'UTC');
  const ran = d('2024-01-01T00:00:00Z');
  const started = d('2024-01-01T00:00:00.010Z');
  const finished = d('2024-01-01T00:02:30Z'); // ran for 2.5 minutes: 00:01 and 00:02 came due meanwhile
  it('skip: occurrences that came due during the run are skipped', () => {
    const r = nextAfterRun({ recurrence: every1m, ran, started, finished, overlap: 'skip' });
    expect(r.next).toEqual(d('2024-01-01T00:03:00Z'));
    expect(r.skipped).toMatchObject({ from: d('2024-01-01T00:01:00Z'), to: d('2024-01-01T00:02:00Z'), count: 2 });
  });
  it('queue: the next one runs right after', () => {
    expect(nextAfterRun({ recurrence: every1m, ran, started, finished, overlap: 'queue' })).toEqual({
      next: d('2024-01-01T00:01:00Z'),
      skipped: null,
    });
  });
  it('backlog that was due before the run started is left to the missed-run policy', () => {
    const late = d('2024-01-01T00:05:00Z');
    expect(nextAfterRun({ recurrence: every1m, ran, started: late, finished: late, overlap: 'skip' }).next).toEqual(d('2024-01-01T00:01:00Z'));
  });
  it('a quick run changes nothing', () => {
    expect(nextAfterRun({ recurrence: every1m, ran, started, finished: started, overlap: 'skip' })).toEqual({
      next: d('2024-01-01T00:01:00Z'),
      skipped: null,
    });
  });
});
