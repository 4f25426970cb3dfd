import { Cron } from 'croner';

/**
 * Occurrences of a schedule: a one-shot time, a fixed or calendar interval, or a cron expression, all
 * read in the schedule's time zone. Pure functions of their inputs (no clock, no I/O) so the
 * missed-run and overlap policies can be unit-tested exactly.
 */
export interface Recurrence {
  /**
   * The occurrence after occurrence `t`, or null when there is none. (For cron, `t` may be any time:
   * the first occurrence strictly after it. An interval counts from its occurrences, so pass one.)
   */
  after(t: Date): Date | null;
  /**
   * Up to `n` occurrences in [from, to], newest first, where `from` is itself an occurrence (the
   * schedule's current one).
   */
  latest(from: Date, to: Date, n: number): Date[];
}

/** A PostgreSQL interval split the way PostgreSQL adds it: months, then days (wall clock), then time. */
export interface IntervalParts {
  readonly months: number;
  readonly days: number;
  readonly ms: number;
}

/** node-postgres' parsed interval (postgres-interval), possibly with fields left out. */
export interface PgInterval {
  years?: number;
  months?: number;
  days?: number;
  hours?: number;
  minutes?: number;
  seconds?: number;
  milliseconds?: number;
}

export function intervalParts(v: PgInterval): IntervalParts {
  return {
    months: (v.years ?? 0) * 12 + (v.months ?? 0),
    days: v.days ?? 0,
    ms: (((v.hours ?? 0) * 60 + (v.minutes ?? 0)) * 60 + (v.seconds ?? 0)) * 1000 + (v.milliseconds ?? 0),
  };
}

const UTC_NAMES = new Set(['utc', 'etc/utc', 'gmt', 'etc/gmt', 'z', 'zulu', 'universal', 'etc/universal']);
export function isUtc(tz: string): boolean {
  return UTC_NAMES.has(tz.toLowerCase());
}

const formatters = new Map<string, Intl.DateTimeFormat>();
function formatter(tz: string): Intl.DateTimeFormat {
  let f = formatters.get(tz);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone: tz,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
    });
    if (formatters.size > 1000) formatters.clear();
    formatters.set(tz, f);
  }
  return f;
}

/** Throws a RangeError naming the zone when neither ICU nor our UTC aliases know it. */
export function checkTimeZone(tz: string): void {
  if (!isUtc(tz)) formatter(tz);
}

/** Milliseconds to add to UTC to get the wall clock in `tz` at instant `ms`. */
function offsetAt(ms: number, tz: string): number {
  if (isUtc(tz)) return 0;
  const parts = formatter(tz).formatToParts(new Date(ms));
  const get = (type: string) => Number(parts.find((p) => p.type === type)?.value);
  const wall = Date.UTC(get('year'), get('month') - 1, get('day'), get('hour'), get('minute'), get('second'));
  return wall - (ms - (((ms % 1000) + 1000) % 1000));
}

/** The instant whose wall clock in `tz` reads `wall` (a UTC-encoded wall time); in a gap, the later side. */
function fromWall(wall: number, tz: string): number {
  if (isUtc(tz)) return wall;
  let guess = wall - offsetAt(wall, tz);
  const second = wall - offsetAt(guess, tz);
  if (second !== guess) guess = second;
  return guess;
}

/**
 * `t + interval` as PostgreSQL computes timestamptz + interval with TimeZone = tz: months (clamped to
 * the month's last day), then days on the wall clock (so "1 day" stays at the same local time across
 * a daylight-saving change), then the time part as elapsed time.
 */
export function addInterval(t: Date, parts: IntervalParts, tz: string): Date {
  let ms = t.getTime();
  if (parts.months !== 0 || parts.days !== 0) {
    const wall = new Date(ms + offsetAt(ms, tz));
    let y = wall.getUTCFullYear();
    let m = wall.getUTCMonth() + parts.months;
    y += Math.floor(m / 12);
    m = ((m % 12) + 12) % 12;
    const lastDay = new Date(Date.UTC(y, m + 1, 0)).getUTCDate();
    const d = Math.min(wall.getUTCDate(), lastDay);
    const shifted = Date.UTC(y, m, d + parts.days, wall.getUTCHours(), wall.getUTCMinutes(), wall.getUTCSeconds(), wall.getUTCMilliseconds());
    ms = fromWall(shifted, tz);
  }
  return new Date(ms + parts.ms);
}

export function onceRecurrence(at: Date): Recurrence {
  return {
    after: () => null,
    latest: (from, to) => (at >= from && at <= to ? [at] : []),
  };
}

// A calendar interval moves at least a day per step; this bounds a walk to ~270 years.
const MAX_STEPS = 100_000;

export function intervalRecurrence(every: IntervalParts, tz: string): Recurrence {
  const fixed = every.months === 0 && every.days === 0;
  if (fixed && every.ms <= 0) throw new RangeError('an interval schedule needs a positive interval');
  if (!fixed && (every.months < 0 || every.days < 0 || (every.months === 0 && every.days === 0))) {
    throw new RangeError('an interval with negative months or days is not supported');
  }
  return {
    after(t) {
      return addInterval(t, every, tz);
    },
    latest(from, to, n) {
      if (to < from || n <= 0) return [];
      if (fixed) {
        // Occurrences are from + k·every: the newest ones follow from a division.
        const k = Math.floor((to.getTime() - from.getTime()) / every.ms);
        const out: Date[] = [];
        for (let i = k; i >= 0 && out.length < n; i--) out.push(new Date(from.getTime() + i * every.ms));
        return out;
      }
      const ring: Date[] = [];
      let t: Date = from;
      for (let step = 0; t <= to && step < MAX_STEPS; step++) {
        ring.push(t);
        if (ring.length > n) ring.shift();
        t = addInterval(t, every, tz);
      }
      return ring.reverse();
    },
  };
}

const crons = new Map<string, Cron>();
/** A parsed cron expression (5 fields, or 6 with seconds first), cached; throws on a bad one. */
export function parseCron(expression: string, tz: string): Cron {
  const cacheKey = `${tz}\u0000${expression}`;
  let cron = crons.get(cacheKey);
  if (!cron) {
    // croner is much faster with a fixed offset than with a zone name; UTC needs no zone rules.
    cron = new Cron(expression, isUtc(tz) ? { utcOffset: 0, paused: true } : { timezone: tz, paused: true });
    // A bad zone only shows when a date is computed.
    cron.nextRun(new Date(0));
    if (crons.size > 1000) crons.clear();
    crons.set(cacheKey, cron);
  }
  return cron;
}

export function cronRecurrence(expression: string, tz: string): Recurrence {
  const cron = parseCron(expression, tz);
  return {
    after: (t) => cron.nextRun(t),
    latest(from, to, n) {
      if (to < from || n <= 0) return [];
      // Walk forward from `from` while that is cheaper (few occurrences in range); each step costs
      // ~1 ms with a zone name, so a long range is read backwards from `to` instead.
      const walked: Date[] = [from];
      for (let t = cron.nextRun(from); t && t <= to; t = cron.nextRun(t)) {
        walked.push(t);
        if (walked.length > n) {
          // croner counts "before the reference" after dropping milliseconds: the next whole
          // second makes `to` itself count.
          const reference = new Date(Math.floor(to.getTime() / 1000) * 1000 + 1000);
          return cron.previousRuns(n, reference).filter((d) => d >= from && d <= to);
        }
      }
      return walked.reverse().slice(0, n);
    },
  };
}

/** A schedule's timing, as stored in sidekick.schedules. */
export interface Timing {
  readonly runAt: Date | null;
  readonly every: PgInterval | null;
  readonly cron: string | null;
  readonly timeZone: string;
}

/** The recurrence of a schedule row; throws (RangeError or croner's Error) when it cannot be computed. */
export function recurrenceOf(timing: Timing, due: Date | null): Recurrence {
  if (timing.cron !== null) return cronRecurrence(timing.cron, timing.timeZone);
  if (timing.every !== null) {
    checkTimeZone(timing.timeZone);
    return intervalRecurrence(intervalParts(timing.every), timing.timeZone);
  }
  return onceRecurrence(timing.runAt ?? due ?? new Date(NaN));
}

export type MissedPolicy = 'skip' | 'once' | 'all';
export type OverlapPolicy = 'skip' | 'queue';

export interface Skipped {
  /** The first occurrence not run (the occurrence key of the "skipped" history row). */
  readonly from: Date;
  /** The last occurrence not run. */
  readonly to: Date;
  /** How many (counted up to a bound: `atLeast` says the count stopped there). */
  readonly count: number;
  readonly atLeast: boolean;
}

export interface Plan {
  /** The occurrence to run now, or null when the policy runs nothing. */
  readonly run: Date | null;
  readonly skipped: Skipped | null;
  /** With nothing to run: the occurrence after which the schedule continues. */
  readonly resumeAfter: Date | null;
}

// Counting walks occurrences (~1 ms each for cron with a zone name): past this, "500+".
const COUNT_BOUND = 500;

/** Occurrences in [from, to] (to ≥ from, both occurrences), counted up to a bound. */
function countBetween(rec: Recurrence, from: Date, to: Date): { count: number; atLeast: boolean } {
  const found = rec.latest(from, to, COUNT_BOUND + 1);
  return found.length > COUNT_BOUND ? { count: COUNT_BOUND, atLeast: true } : { count: found.length, atLeast: false };
}

function skippedRange(rec: Recurrence, from: Date, toExclusive: Date | null, toInclusive: Date | null): Skipped | null {
  let to = toInclusive;
  if (toExclusive) {
    const before = rec.latest(from, new Date(toExclusive.getTime() - 1), 1)[0];
    to = before ?? null;
  }
  if (!to || to < from) return null;
  return { from, to, ...countBetween(rec, from, to) };
}

/**
 * What to do with the due occurrence `due` at time `now`.
 *
 * An occurrence is *missed* when a later occurrence is also due already (not with overlap `queue`,
 * where occurrences wait their turn behind a long run), or when it is more than `grace` ms late.
 * Then the schedule's policy decides: `skip` runs only the newest due occurrence if that one is not
 * late itself (else nothing), `once` runs the newest due occurrence once for all of
 * them, `all` runs every due occurrence oldest first — at most `cap` of them, the most recent ones.
 * Retries (`retry`) of an occurrence that failed are deliberately late and always run.
 */
export function planOccurrence(params: {
  recurrence: Recurrence;
  due: Date;
  now: Date;
  missed: MissedPolicy;
  cap: number;
  graceMs: number;
  retry: boolean;
  /** With `queue`, occurrences queued behind a long run are not missed for being superseded. Default skip. */
  overlap?: OverlapPolicy;
}): Plan {
  const { recurrence: rec, due, now, missed, cap, graceMs } = params;
  const onTime = { run: due, skipped: null, resumeAfter: null };
  if (params.retry || due > now) return onTime;
  const late = (o: Date) => now.getTime() - o.getTime() > graceMs;
  // The common case, cheaply: the next occurrence is not due yet and this one is not late.
  const second = params.overlap === 'queue' ? null : rec.after(due);
  if ((!second || second > now) && !late(due)) return onTime;
  const recent = rec.latest(due, now, missed === 'all' ? Math.max(cap, 1) + 1 : 1);
  const newest = recent[0] ?? due;
  switch (missed) {
    case 'skip':
      if (newest > due && !late(newest)) {
        return { run: newest, skipped: skippedRange(rec, due, newest, null), resumeAfter: null };
      }
      return { run: null, skipped: skippedRange(rec, due, null, newest), resumeAfter: newest };
    case 'once':
      return { run: newest, skipped: newest > due ? skippedRange(rec, due, newest, null) : null, resumeAfter: null };
    case 'all': {
      if (recent.length <= cap) return onTime;
      const oldestKept = recent[cap - 1] as Date;
      return { run: oldestKept, skipped: skippedRange(rec, due, oldestKept, null), resumeAfter: null };
    }
  }
}

/**
 * The occurrence after a run of `ran` that started at `started` and finished at `finished`. With
 * overlap `skip`, occurrences that came due while it ran are skipped (returned as `skipped`);
 * occurrences that were due before it started are backlog, left to the missed-run policy.
 */
export function nextAfterRun(params: { recurrence: Recurrence; ran: Date; started: Date; finished: Date; overlap: OverlapPolicy }): {
  next: Date | null;
  skipped: Skipped | null;
} {
  const { recurrence: rec, ran, started, finished, overlap } = params;
  const next = rec.after(ran);
  if (!next || overlap === 'queue' || next <= started || next > finished) return { next, skipped: null };
  const lastSkipped = rec.latest(next, finished, 1)[0] ?? next;
  return { next: rec.after(lastSkipped), skipped: skippedRange(rec, next, null, lastSkipped) };
}
