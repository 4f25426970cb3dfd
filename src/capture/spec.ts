import { ConfigError } from '../errors.js';

/** The three row operations a capture trigger can fire on. */
export const OPERATIONS = ['insert', 'update', 'delete'] as const;
export type Operation = (typeof OPERATIONS)[number];

/** Which columns an event carries: every column, or the listed ones. */
export type ColumnSelection = '*' | readonly string[];

/**
 * One table to capture, whichever way it was described (the config's `capture:` entry or a skor
 * `triggers.json` entry). Only the operations present in `operations` get a trigger.
 */
export interface CaptureSpec {
  /** Where it came from, for error messages: `capture[2]`, `triggers.json entry 3`. */
  readonly origin: string;
  readonly schema: string;
  readonly table: string;
  readonly operations: Readonly<Partial<Record<Operation, ColumnSelection>>>;
  /** Ordering key columns; undefined = the primary key. */
  readonly key?: readonly string[];
  /** `statement` (default): one trigger call per statement, reading transition tables; `row`: one call and one outbox INSERT per row. */
  readonly mode: 'statement' | 'row';
  /** The entry's key path in the config (`capture[2]`), for errors about one of its keys (`capture[2].where`). */
  readonly path?: string;
  /** Capture only rows for which this SQL boolean holds: over NEW for INSERT and UPDATE, over OLD for DELETE. */
  readonly where?: string;
  /** UPDATE: capture only when one of these columns IS DISTINCT FROM its old value. */
  readonly changed?: readonly string[];
}

/** The `capture:` entry of the config, as validated by the config schema. */
export interface CaptureConfigEntry {
  readonly table: string;
  readonly operations?: readonly Operation[];
  readonly columns: ColumnSelection | Readonly<Partial<Record<Operation, ColumnSelection>>>;
  readonly key?: readonly string[];
  readonly mode: 'statement' | 'row';
  readonly where?: string;
  readonly changed?: readonly string[];
}

/** Where a problem with one key of a spec is reported: `capture[0].where (table orders) in c.yaml`. */
export function keyOrigin(spec: Pick<CaptureSpec, 'origin' | 'path'>, key: string): string {
  if (spec.path && spec.origin.startsWith(spec.path)) return `${spec.path}.${key}${spec.origin.slice(spec.path.length)}`;
  return `${spec.origin}, ${key}`;
}

/**
 * Why `where` is not one SQL expression, or undefined. It is pasted into the trigger's SQL, so it may
 * not end the statement (`;`) or close a parenthesis it did not open (`x) OR (y`): either would change
 * what the surrounding SQL means. Strings, quoted identifiers, dollar quotes and comments are skipped.
 * The database checks the rest (see catalog.ts).
 */
export function whereProblem(text: string): string | undefined {
  if (text.trim() === '') return 'is empty';
  let depth = 0;
  let i = 0;
  const skipTo = (end: string, from: number): number => {
    const at = text.indexOf(end, from);
    return at === -1 ? -1 : at + end.length;
  };
  while (i < text.length) {
    const ch = text[i] as string;
    const next = text[i + 1];
    let end = i + 1;
    if (ch === "'" || ch === '"') {
      // '' and "" are escaped quotes: scanning on from the second quote finds the real end.
      end = i + 1;
      for (;;) {
        const at = text.indexOf(ch, end);
        if (at === -1) return `has an unterminated ${ch === "'" ? 'string' : 'quoted identifier'}`;
        const escaped = ch === "'" && /[eE]/.test(text[i - 1] ?? '') && !/\w/.test(text[i - 2] ?? '');
        if (escaped && countBackslashes(text, at) % 2 === 1) {
          end = at + 1;
          continue;
        }
        if (text[at + 1] === ch) {
          end = at + 2;
          continue;
        }
        end = at + 1;
        break;
      }
    } else if (ch === '-' && next === '-') {
      const at = text.indexOf('\n', i);
      end = at === -1 ? text.length : at + 1;
    } else if (ch === '/' && next === '*') {
      let nested = 0;
      end = i;
      do {
        const open = text.indexOf('/*', end);
        const close = text.indexOf('*/', end);
        if (close === -1) return 'has an unterminated /* comment';
        if (open !== -1 && open < close) {
          nested++;
          end = open + 2;
        } else {
          nested--;
          end = close + 2;
        }
      } while (nested > 0);
    } else if (ch === '$' && !/[\w$]/.test(text[i - 1] ?? '')) {
      const tag = /^\$([A-Za-z_][A-Za-z0-9_]*)?\$/.exec(text.slice(i))?.[0];
      if (tag) {
        end = skipTo(tag, i + tag.length);
        if (end === -1) return `has an unterminated ${tag} quote`;
      }
    } else if (ch === ';') {
      return 'must be one SQL expression, without ";"';
    } else if (ch === '(') {
      depth++;
    } else if (ch === ')') {
      depth--;
      if (depth < 0) return 'closes a parenthesis it did not open';
    }
    i = end;
  }
  if (depth > 0) return 'leaves a parenthesis open';
  return undefined;
}

function countBackslashes(text: string, before: number): number {
  let n = 0;
  while (text[before - 1 - n] === '\\') n++;
  return n;
}

/**
 * Splits `schema.table`, `table`, or quoted forms (`"My Schema"."Order"`) into parts. Unquoted parts
 * are taken exactly as written (no case folding): `Orders` means the table "Orders".
 */
export function parseQualifiedName(text: string, defaultSchema = 'public'): { schema: string; table: string } {
  const parts: string[] = [];
  let i = 0;
  while (i < text.length) {
    if (text[i] === '"') {
      let part = '';
      i++;
      for (;;) {
        if (i >= text.length) throw new Error(`unterminated quote in table name ${JSON.stringify(text)}`);
        if (text[i] === '"') {
          if (text[i + 1] === '"') {
            part += '"';
            i += 2;
            continue;
          }
          i++;
          break;
        }
        part += text[i];
        i++;
      }
      parts.push(part);
    } else {
      const dot = text.indexOf('.', i);
      const end = dot === -1 ? text.length : dot;
      parts.push(text.slice(i, end));
      i = end;
    }
    if (i < text.length) {
      if (text[i] !== '.') throw new Error(`unexpected ${JSON.stringify(text[i])} in table name ${JSON.stringify(text)}`);
      i++;
      if (i === text.length) throw new Error(`table name ${JSON.stringify(text)} ends with a dot`);
    }
  }
  if (parts.length === 0 || parts.some((p) => p === '')) throw new Error(`empty part in table name ${JSON.stringify(text)}`);
  if (parts.length === 1) return { schema: defaultSchema, table: parts[0] as string };
  if (parts.length === 2) return { schema: parts[0] as string, table: parts[1] as string };
  throw new Error(`table name ${JSON.stringify(text)} has more than two parts (write schema.table)`);
}

/** Turns validated `capture:` config entries into specs. */
export function captureSpecsFromConfig(entries: readonly CaptureConfigEntry[], file = 'config'): CaptureSpec[] {
  return entries.map((entry, index) => {
    const origin = `capture[${index}] (table ${entry.table}) in ${file}`;
    let name: { schema: string; table: string };
    try {
      name = parseQualifiedName(entry.table);
    } catch (error) {
      throw new ConfigError(`${origin}: ${(error as Error).message}`);
    }
    const operations: Partial<Record<Operation, ColumnSelection>> = {};
    if (typeof entry.columns === 'string' || Array.isArray(entry.columns)) {
      for (const op of entry.operations ?? OPERATIONS) operations[op] = entry.columns as ColumnSelection;
    } else {
      const perOp = entry.columns as Partial<Record<Operation, ColumnSelection>>;
      const listed = OPERATIONS.filter((op) => perOp[op] !== undefined);
      if (listed.length === 0) throw new ConfigError(`${origin}: columns lists no operation (use insert, update and/or delete)`);
      if (entry.operations) {
        const extra = listed.filter((op) => !entry.operations?.includes(op));
        if (extra.length > 0) {
          throw new ConfigError(`${origin}: columns has ${extra.join(', ')} but operations does not list ${extra.length > 1 ? 'them' : 'it'}`);
        }
      }
      for (const op of entry.operations ?? listed) operations[op] = perOp[op] ?? '*';
    }
    const path = `capture[${index}]`;
    if (entry.where !== undefined) {
      const problem = whereProblem(entry.where);
      if (problem) throw new ConfigError(`${keyOrigin({ origin, path }, 'where')}: ${problem}`);
    }
    if (entry.changed !== undefined) {
      const at = keyOrigin({ origin, path }, 'changed');
      if (!operations.update) throw new ConfigError(`${at}: only UPDATEs have changed columns, and this entry captures no update`);
      const twice = entry.changed.find((c, i) => entry.changed?.indexOf(c) !== i);
      if (twice !== undefined) throw new ConfigError(`${at}: column "${twice}" is listed twice`);
    }
    return {
      origin,
      path,
      schema: name.schema,
      table: name.table,
      operations,
      ...(entry.key ? { key: entry.key } : {}),
      mode: entry.mode,
      ...(entry.where !== undefined ? { where: entry.where } : {}),
      ...(entry.changed !== undefined ? { changed: entry.changed } : {}),
    };
  });
}

function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  return typeof value === 'object' ? 'an object' : JSON.stringify(value);
}

function parseColumns(value: unknown, where: string): ColumnSelection {
  if (value === '*') return '*';
  if (Array.isArray(value) && value.length > 0 && value.every((c) => typeof c === 'string' && c !== '')) {
    const seen = new Set<string>();
    for (const c of value as string[]) {
      if (seen.has(c)) throw new ConfigError(`${where}: column "${c}" is listed twice`);
      seen.add(c);
    }
    return value as string[];
  }
  throw new ConfigError(`${where}: expected "*" or a non-empty list of column names, got ${describeValue(value)}`);
}

/**
 * Reads Hasura skor's `triggers.json` unchanged: a list of `{"table", "schema"?, "columns"?}` where
 * `columns` is `"*"` (the default), a list of column names, or `{"insert"|"update"|"delete": "*"|list}`
 * (only the listed operations get a trigger). Unknown keys and operations are errors naming the entry.
 * Like skor, `schema` defaults to `public` and `table` is a bare table name.
 */
export function parseSkorTriggers(document: unknown, file = 'triggers.json'): CaptureSpec[] {
  if (!Array.isArray(document)) {
    throw new ConfigError(`${file}: expected a list of {"table", "schema", "columns"} entries, got ${describeValue(document)}`);
  }
  const seen = new Map<string, string>();
  return document.map((entry: unknown, index) => {
    let origin = `${file} entry ${index + 1}`;
    if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) {
      throw new ConfigError(`${origin}: expected an object with "table", got ${describeValue(entry)}`);
    }
    const record = entry as Record<string, unknown>;
    if (typeof record.table !== 'string' || record.table === '') {
      throw new ConfigError(`${origin}: "table" must be a non-empty string`);
    }
    origin += ` (table ${record.table})`;
    const unknown = Object.keys(record).filter((k) => !['table', 'schema', 'columns'].includes(k));
    if (unknown.length > 0) {
      throw new ConfigError(
        `${origin}: unknown key${unknown.length > 1 ? 's' : ''} ${unknown.map((k) => `"${k}"`).join(', ')} (known: table, schema, columns)`,
      );
    }
    if (record.schema !== undefined && (typeof record.schema !== 'string' || record.schema === '')) {
      throw new ConfigError(`${origin}: "schema" must be a non-empty string`);
    }
    const schema = (record.schema as string | undefined) ?? 'public';
    const columns = record.columns ?? '*';
    const operations: Partial<Record<Operation, ColumnSelection>> = {};
    if (columns !== null && typeof columns === 'object' && !Array.isArray(columns)) {
      const perOp = columns as Record<string, unknown>;
      const keys = Object.keys(perOp);
      if (keys.length === 0) throw new ConfigError(`${origin}: "columns" lists no operation (use insert, update and/or delete)`);
      for (const key of keys) {
        const op = key.toLowerCase();
        if (!(OPERATIONS as readonly string[]).includes(op)) {
          throw new ConfigError(`${origin}: unknown operation "${key}" in "columns" (known: insert, update, delete)`);
        }
        if (operations[op as Operation] !== undefined) throw new ConfigError(`${origin}: operation "${op}" is listed twice`);
        operations[op as Operation] = parseColumns(perOp[key], `${origin}, columns.${key}`);
      }
    } else {
      const selection = parseColumns(columns, `${origin}, columns`);
      for (const op of OPERATIONS) operations[op] = selection;
    }
    const id = JSON.stringify([schema, record.table]);
    const previous = seen.get(id);
    if (previous) throw new ConfigError(`${origin}: the same table as ${previous}`);
    seen.set(id, origin);
    return { origin, schema, table: record.table, operations, mode: 'statement' as const };
  });
}
