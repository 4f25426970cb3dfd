/**
 * pglater's notification format: `<seconds> <sql>`. pglater reads it with `sscanf("%d %n")`: optional
 * leading whitespace, an optional sign, decimal digits, whitespace, and the rest of the payload is the
 * SQL, verbatim. Where pglater was sloppy we are strict, because every such case ended in pglater
 * exiting or running garbage:
 * - `30select 1` (no whitespace after the number): pglater ran "select 1"; here it is malformed, as
 *   are `1.5 select 1` and `0x10 select 1` (pglater ran ".5 select 1" and "x10 select 1").
 * - nothing after the number (`30`, `30   `): pglater scheduled an empty command and exited when it
 *   failed; here it is malformed.
 * - a number beyond a C int (pglater's overflow was undefined): malformed.
 * A delay of zero or less means "now".
 */

export type LaterPayload =
  | { readonly ok: true; readonly delaySeconds: number; readonly sql: string }
  | { readonly ok: false; readonly reason: string };

// C's isspace in the "C" locale: what sscanf skips.
const WS = '[ \\t\\n\\v\\f\\r]';
const FORMAT = new RegExp(`^${WS}*([+-]?)([0-9]+)(${WS}+)?([\\s\\S]*)$`);
const INT_MAX = 2_147_483_647;

export function parseLaterPayload(payload: string): LaterPayload {
  const m = FORMAT.exec(payload);
  if (!m) {
    return { ok: false, reason: 'expected "<seconds> <sql>": an integer number of seconds, whitespace, then the SQL' };
  }
  const [, sign, digits, gap, rest] = m as unknown as [string, string, string, string | undefined, string];
  if (gap === undefined) {
    return rest === ''
      ? { ok: false, reason: 'no SQL after the number of seconds' }
      : { ok: false, reason: `expected whitespace after the number of seconds, found "${rest.slice(0, 1)}"` };
  }
  if (rest.trim() === '') return { ok: false, reason: 'no SQL after the number of seconds' };
  const magnitude = Number(digits);
  // C int range (pglater's %d); the negative side is one larger, but any negative delay means "now".
  if (magnitude > INT_MAX + (sign === '-' ? 1 : 0)) {
    return { ok: false, reason: `the number of seconds ${sign}${digits} is out of range (at most ${INT_MAX})` };
  }
  const delaySeconds = sign === '-' ? -magnitude : magnitude;
  return { ok: true, delaySeconds: Object.is(delaySeconds, -0) ? 0 : delaySeconds, sql: rest };
}

/** One allow-list entry: a regular expression as a string, or `/pattern/flags` to give flags. */
export function compileAllowEntry(entry: string): RegExp {
  const literal = /^\/([\s\S]*)\/([dgimsuvy]*)$/.exec(entry);
  // `g` and `y` make RegExp.test stateful; they are dropped (they mean nothing for a whole-text test).
  if (literal) return new RegExp(literal[1] as string, (literal[2] as string).replace(/[gy]/g, ''));
  return new RegExp(entry);
}

/**
 * The allow-list check: with no list every statement is allowed; with one, the SQL must match at
 * least one entry (tested against the whole SQL text as received).
 */
export function createAllowList(entries: readonly string[] | undefined): ((sql: string) => boolean) | undefined {
  if (!entries || entries.length === 0) return undefined;
  const patterns = entries.map(compileAllowEntry);
  return (sql) => patterns.some((p) => p.test(sql));
}
