import { describe, expect, it } from 'vitest';
import type { ResolvedCapture } from '../../src/capture/catalog.js';
import { captureSpecsFromConfig, parseQualifiedName, parseSkorTriggers, whereProblem } from '../../src/capture/spec.js';
import { captureStatements, dropStatements, functionName, ROW_CHANGE_COLUMNS, script } from '../../src/capture/sql.js';
import { parseConfig } from '../../src/config.js';
import { ConfigError } from '../../src/errors.js';
import { sinkDefinitions } from '../../sinks/index.js';

function resolved(over: Partial<ResolvedCapture> = {}): ResolvedCapture {
  return {
    origin: 'capture[0]',
    schema: 'public',
    table: 'orders',
    mode: 'statement',
    operations: { insert: '*', update: '*', delete: '*' },
    key: ['id'],
    keySource: 'primary key',
    tableColumns: ['id', 'status'],
    ...over,
  };
}

describe('skor triggers.json', () => {
  it('reads every form skor accepts, unchanged', () => {
    const specs = parseSkorTriggers([
      { table: 'tracks' },
      { table: 'films', columns: '*' },
      { table: 'artists', columns: ['id'] },
      { table: 'genres', schema: 'music', columns: { insert: '*', update: ['id', 'name'], delete: ['id'] } },
      { table: 'only_deletes', columns: { DELETE: ['id'] } },
    ]);
    expect(specs.map((s) => [s.schema, s.table, s.operations])).toEqual([
      ['public', 'tracks', { insert: '*', update: '*', delete: '*' }],
      ['public', 'films', { insert: '*', update: '*', delete: '*' }],
      ['public', 'artists', { insert: ['id'], update: ['id'], delete: ['id'] }],
      ['music', 'genres', { insert: '*', update: ['id', 'name'], delete: ['id'] }],
      ['public', 'only_deletes', { delete: ['id'] }],
    ]);
    expect(specs[0]?.origin).toBe('triggers.json entry 1 (table tracks)');
  });

  it('names the entry of every mistake', () => {
    const bad = (doc: unknown) => () => parseSkorTriggers(doc, 'triggers.json');
    expect(bad({ table: 'x' })).toThrow(/expected a list/);
    expect(bad([{ table: 'a' }, 'b'])).toThrow(/triggers\.json entry 2: expected an object/);
    expect(bad([{ columns: '*' }])).toThrow(/entry 1: "table" must be a non-empty string/);
    expect(bad([{ table: 't', colums: '*' }])).toThrow(/entry 1 \(table t\): unknown key "colums"/);
    expect(bad([{ table: 't', columns: { upsert: '*' } }])).toThrow(/entry 1 \(table t\): unknown operation "upsert"/);
    expect(bad([{ table: 't', columns: {} }])).toThrow(/lists no operation/);
    expect(bad([{ table: 't', columns: [] }])).toThrow(/entry 1 \(table t\), columns: expected "\*" or a non-empty list/);
    expect(bad([{ table: 't', columns: ['a', 'a'] }])).toThrow(/column "a" is listed twice/);
    expect(bad([{ table: 't', columns: { insert: 5 } }])).toThrow(/columns\.insert: expected/);
    expect(bad([{ table: 't' }, { table: 't', schema: 'public' }])).toThrow(/entry 2 \(table t\): the same table as triggers\.json entry 1/);
    for (const f of [bad([{ table: 't', x: 1 }])]) expect(f).toThrow(ConfigError);
  });
});

describe('capture: config entries', () => {
  it('parses qualified and quoted names exactly as written', () => {
    expect(parseQualifiedName('orders')).toEqual({ schema: 'public', table: 'orders' });
    expect(parseQualifiedName('Sales.Orders')).toEqual({ schema: 'Sales', table: 'Orders' });
    expect(parseQualifiedName('"my schema"."a.b""c"')).toEqual({ schema: 'my schema', table: 'a.b"c' });
    expect(() => parseQualifiedName('a.b.c')).toThrow(/more than two parts/);
    expect(() => parseQualifiedName('a.')).toThrow(/ends with a dot/);
    expect(() => parseQualifiedName('"a')).toThrow(/unterminated quote/);
  });

  it('turns operations, per-operation columns and key into specs, and rejects contradictions', () => {
    const [a, b, c] = captureSpecsFromConfig([
      { table: 'public.orders', columns: '*', mode: 'statement' },
      { table: 'items', operations: ['insert', 'delete'], columns: ['id'], key: ['id'], mode: 'row' },
      { table: 'x', columns: { update: ['id'], delete: '*' }, mode: 'statement' },
    ]);
    expect(a?.operations).toEqual({ insert: '*', update: '*', delete: '*' });
    expect(b).toMatchObject({ operations: { insert: ['id'], delete: ['id'] }, key: ['id'], mode: 'row' });
    expect(c?.operations).toEqual({ update: ['id'], delete: '*' });
    expect(() => captureSpecsFromConfig([{ table: 'x', operations: ['insert'], columns: { update: ['id'] }, mode: 'statement' }])).toThrow(
      /capture\[0\] \(table x\) in config: columns has update but operations does not list it/,
    );
  });

  it('is validated with the rest of the config (strict keys, operations, defaults)', () => {
    const parse = (doc: Record<string, unknown>) => parseConfig({ sinks: {}, ...doc }, { file: 'c.yaml', sinks: sinkDefinitions });
    const config = parse({ capture: [{ table: 'orders', key: 'id', operations: ['INSERT'] }] });
    expect(config.capture[0]).toEqual({ table: 'orders', key: ['id'], operations: ['insert'], columns: '*', mode: 'statement' });
    expect(config.outbox).toEqual({ enabled: 'auto', batchSize: 1000, pollInterval: 1000, sinkBuffer: 10_000, checkpointAfter: 1000 });
    expect(() => parse({ capture: [{ table: 'orders', colums: '*' }] })).toThrow(/capture\[0\]\.colums: unknown key/);
    expect(() => parse({ capture: [{ table: 'orders', operations: ['upsert'] }] })).toThrow(/capture\[0\]\.operations\[0\]/);
    expect(() => parse({ outbox: { pollInterval: 'soon' } })).toThrow(/outbox\.pollInterval: not a duration/);
    expect(() => parse({ capture: [{ table: 'a.b.c' }] })).toThrow(
      /capture\[0\] \(table a\.b\.c\) in c\.yaml: table name "a\.b\.c" has more than two parts/,
    );
  });
});

describe('capture: keys of row images', () => {
  it('reads one column as text, several as a JSON array, and takes given keys as they are', async () => {
    const { rowKey } = await import('../../src/outbox/queries.js');
    expect(rowKey(null, { id: 7, x: 1 }, ['id'])).toBe('7');
    expect(rowKey(null, { id: 'a b' }, ['id'])).toBe('a b');
    expect(rowKey(null, { a: 1, b: 'k' }, ['a', 'b'])).toBe('[1,"k"]');
    expect(rowKey([1, 'k'], { other: true }, ['a', 'b'])).toBe('[1,"k"]');
    expect(rowKey('given', null, null)).toBe('given');
    expect(rowKey(null, { id: null }, ['id'])).toBeUndefined();
    expect(rowKey(null, { renamed: 1 }, ['id'])).toBeUndefined();
    expect(rowKey(null, { id: 1 }, null)).toBeUndefined();
  });
});

describe('capture: generated SQL', () => {
  it('creates one SECURITY DEFINER function with a pinned search_path and one trigger per operation', () => {
    const sql = captureStatements([resolved()]);
    for (const op of ['insert', 'update', 'delete']) {
      expect(sql).toContain(`CREATE OR REPLACE FUNCTION sidekick."public.orders:${op}"() RETURNS trigger`);
      expect(sql).toContain(`REVOKE ALL ON FUNCTION sidekick."public.orders:${op}"() FROM PUBLIC;`);
      expect(sql).toContain(`CREATE TRIGGER "sidekick_capture_${op}" AFTER ${op.toUpperCase()} ON "public"."orders"`);
    }
    expect(sql.match(/SECURITY DEFINER SET search_path = pg_catalog, pg_temp/g)).toHaveLength(3);
    expect(sql).toContain('REFERENCING OLD TABLE AS sidekick_old NEW TABLE AS sidekick_new');
    expect(sql).toContain('FOR EACH STATEMENT');
    // One outbox row per chunk of the statement, whole rows as JSON, key columns named for the drain;
    // NOTIFY only for the ids after the drain's wake-up mark; never the row in a NOTIFY.
    expect(sql).toContain(`array_agg(c.id), json_agg(c.x)`);
    // INSERT and DELETE: the first two rows one outbox row each, the rest (if any) in chunks.
    expect(sql).toContain(`FROM (SELECT row_to_json(t) AS x FROM sidekick_new AS t) AS t\n  LIMIT 2;\n  GET DIAGNOSTICS v_rows = ROW_COUNT;`);
    expect(sql).toContain(`FROM (SELECT nextval('sidekick.outbox_id_seq') AS id, row_to_json(t) AS x FROM sidekick_new AS t OFFSET 2) AS c`);
    expect(sql).toContain(`FROM (SELECT nextval('sidekick.outbox_id_seq') AS id, row_to_json(t) AS x FROM sidekick_old AS t OFFSET 2) AS c`);
    expect(sql).toContain(`GROUP BY c.id / 1000, CASE WHEN octet_length(c.x::text) > 262144 THEN c.id ELSE 0 END`);
    expect(sql).toContain(`'{"id"}'::text[]`);
    // Whether the statement took an id just after the mark: the id it just took; no shared flag is read.
    expect(sql).toContain("IF currval('sidekick.outbox_id_seq') % 1024 < 8 THEN");
    expect(sql).toContain("v_wake := currval('sidekick.outbox_id_seq') % 1024 < 8;");
    // UPDATE pairs images: its one-row case tests for a second row, and the insert returns the test.
    expect(sql).toContain('WHERE NOT EXISTS (SELECT 1 FROM sidekick_new OFFSET 1)\n  RETURNING id % 1024 < 8 INTO v_wake');
    expect(sql).toContain("v_wake := nextval('sidekick.outbox_id_seq') % 1024 < 8;");
    // The chunked insert leaves source and channel implied (column default; the drain reads
    // "<schema>.<table>"); a row alone goes to the narrow sidekick.row_changes, every column named,
    // what changed as one constant.
    expect(sql).toContain(
      `INSERT INTO sidekick.outbox (op, schema_name, table_name, key_columns, event_ids, new)\n    SELECT 'INSERT', 'public', 'orders', '{"id"}'::text[],`,
    );
    expect(sql).toContain(
      `INSERT INTO sidekick.row_changes (${ROW_CHANGE_COLUMNS.join(', ')})\n  SELECT nextval('sidekick.outbox_id_seq'), pg_current_xact_id(), now(), ` +
        `'{"INSERT","public","orders","id"}'::text[], t.x, NULL::json, NULL::json\n`,
    );
    expect(sql).toContain(`'{"UPDATE","public","orders","id"}'::text[], n.x, o.x, NULL::json\n`);
    expect(sql).not.toContain('TG_TABLE_');
    expect(sql).not.toContain('drain_idle');
    expect(sql).not.toMatch(/pg_notify\([^)]*x/);
    expect(sql).toMatch(/pg_notify\('sidekick', ''\)/);
  });

  it('picks columns by name, encodes composite keys, drops operations that are not listed', () => {
    const sql = captureStatements([resolved({ operations: { update: ['id', "it's"] }, key: ['a', 'b'] })]);
    expect(sql).toContain(`json_agg((jsonb_build_object('id', c.n -> 'id', 'it''s', c.n -> 'it''s'))::json)`);
    // A column list may leave the key out: its values travel with the row.
    expect(sql).toContain(`json_agg(json_build_array(coalesce(c.n, c.o) -> 'a', coalesce(c.n, c.o) -> 'b'))`);
    expect(sql).toContain(`'{"a","b"}'::text[]`);
    expect(sql).toContain('DROP TRIGGER IF EXISTS "sidekick_capture_insert" ON "public"."orders";');
    expect(sql).toContain('DROP FUNCTION IF EXISTS sidekick."public.orders:delete"();');
    expect(sql).not.toContain('CREATE TRIGGER "sidekick_capture_insert"');
  });

  it('writes row-level triggers on request and NULL keys for tables without one', () => {
    const sql = captureStatements([resolved({ mode: 'row', key: [], keySource: 'none', operations: { insert: '*' } })]);
    // No key column after op, schema and table: the drain reads no key (one ordered stream).
    expect(sql).toContain(
      `INSERT INTO sidekick.row_changes (id, xid, at, capture, new, old, keys)\n  VALUES (nextval('sidekick.outbox_id_seq'), pg_current_xact_id(), ` +
        `now(), '{"INSERT","public","orders"}'::text[], row_to_json(NEW), NULL::json, NULL::json)`,
    );
    expect(sql).toContain('RETURNING id % 1024 < 8 INTO v_wake');
    expect(sql).toContain('FOR EACH ROW EXECUTE FUNCTION');
    expect(sql).toContain('no key (no primary key');
  });

  it('chains jsonb_build_object for more than 50 columns (its limit is 100 arguments)', () => {
    const columns = Array.from({ length: 120 }, (_, i) => `c${i}`);
    const sql = captureStatements([resolved({ operations: { insert: columns } })]);
    expect(sql.match(/jsonb_build_object\(/g)).toHaveLength(6); // 3 each in the one-row and the many-row way
  });

  it('quotes identifiers and keeps function names within 63 bytes, unique per table', () => {
    expect(functionName('public', 'Orders', 'insert')).toBe('public.Orders:insert');
    const long = 'ä'.repeat(40);
    const name = functionName('public', long, 'update');
    expect(Buffer.byteLength(name)).toBeLessThanOrEqual(63);
    expect(name).toMatch(/~[0-9a-f]{8}:update$/);
    expect(functionName('public', `${long}x`, 'update')).not.toBe(name);
    // A dot in the schema could be read two ways: hashed.
    expect(functionName('a.b', 'c', 'insert')).not.toBe(functionName('a', 'b.c', 'insert'));
    const sql = captureStatements([resolved({ schema: 'We"ird', table: 'T', operations: { insert: ['a$sidekick$b'] } })]);
    expect(sql).toContain('ON "We""ird"."T"');
    expect(sql).toContain('$sidekick1$');
  });

  it('wraps a script in one transaction and drops what it created', () => {
    expect(script('t', 'SELECT 1;')).toMatch(/^-- t\n[\s\S]*BEGIN;\n\nSELECT 1;\n\nCOMMIT;\n$/);
    const drop = dropStatements([{ schema: 'public', table: 'orders' }]);
    expect(drop.match(/DROP TRIGGER IF EXISTS/g)).toHaveLength(3);
    expect(drop.match(/DROP FUNCTION IF EXISTS sidekick\."public\.orders:(insert|update|delete)"\(\);/g)).toHaveLength(3);
  });
});

describe('capture filters: where and changed', () => {
  const parse = (doc: Record<string, unknown>) => parseConfig({ sinks: {}, ...doc }, { file: 'c.yaml', sinks: sinkDefinitions });

  it('are config keys, checked for one expression and for an update to compare', () => {
    const config = parse({ capture: [{ table: 'orders', where: "status <> 'draft'", changed: ['status', 'total'] }] });
    expect(config.capture[0]).toMatchObject({ where: "status <> 'draft'", changed: ['status', 'total'] });
    const [spec] = captureSpecsFromConfig(config.capture, 'c.yaml');
    expect(spec).toMatchObject({ path: 'capture[0]', where: "status <> 'draft'", changed: ['status', 'total'] });
    expect(() => parse({ capture: [{ table: 'orders', changed: [] }] })).toThrow(/capture\[0\]\.changed/);
    expect(() => parse({ capture: [{ table: 'orders', where: 5 }] })).toThrow(/capture\[0\]\.where/);
    expect(() => parse({ capture: [{ table: 'orders', where: "a = 'x'; DROP TABLE orders" }] })).toThrow(
      /capture\[0\]\.where \(table orders\) in c\.yaml: must be one SQL expression, without ";"/,
    );
    expect(() => parse({ capture: [{ table: 'orders', operations: ['insert', 'delete'], changed: ['a'] }] })).toThrow(
      /capture\[0\]\.changed \(table orders\) in c\.yaml: only UPDATEs have changed columns/,
    );
    expect(() => parse({ capture: [{ table: 'orders', changed: ['a', 'a'] }] })).toThrow(/capture\[0\]\.changed .*"a" is listed twice/);
    // skor's triggers.json has no such keys: it stays as it was.
    expect(() => parseSkorTriggers([{ table: 't', where: 'true' }])).toThrow(/unknown key "where"/);
  });

  it('finds ; and unbalanced parentheses outside strings, quoted names, dollar quotes and comments', () => {
    for (const ok of [
      "status <> 'draft'",
      'note <> \'a;b)\' AND "we;ird)" > 0',
      "x = 'it''s;'",
      "x = E'\\';' AND y",
      'x = $$;)$$ AND y = $q$ ) $q$',
      'a /* ; ( /* nested ) */ */ > 0 -- ; )\n AND b',
      '(a OR b) AND (c)',
    ]) {
      expect(whereProblem(ok), ok).toBeUndefined();
    }
    expect(whereProblem('a; b')).toMatch(/without ";"/);
    expect(whereProblem('a) OR (b')).toMatch(/closes a parenthesis/);
    expect(whereProblem('(a')).toMatch(/leaves a parenthesis open/);
    expect(whereProblem("a = 'x")).toMatch(/unterminated string/);
    expect(whereProblem('a /* x')).toMatch(/unterminated/);
    expect(whereProblem('a = $$x')).toMatch(/unterminated \$\$ quote/);
    expect(whereProblem('  ')).toMatch(/empty/);
  });

  it('filters the statement trigger in the transition-table scans, UPDATE after pairing', () => {
    const sql = captureStatements([resolved({ where: "status <> 'draft'", changed: ['status', 'total'] })]);
    expect(sql).toContain("only rows where status <> 'draft'; UPDATEs only when status, total change\n");
    expect(sql.match(/#variable_conflict use_column\nDECLARE/g)).toHaveLength(3);
    // INSERT and DELETE: both scans (LIMIT 2 and OFFSET 2) read only matching rows.
    expect(sql).toContain("FROM (SELECT row_to_json(t) AS x FROM sidekick_new AS t WHERE (status <> 'draft')) AS t\n  LIMIT 2;");
    expect(sql).toContain("row_to_json(t) AS x FROM sidekick_new AS t WHERE (status <> 'draft') OFFSET 2) AS c");
    expect(sql).toContain("FROM (SELECT row_to_json(t) AS x FROM sidekick_old AS t WHERE (status <> 'draft')) AS t\n  LIMIT 2;");
    // UPDATE: where over the new row, the changed columns of both, compared once the rows are paired.
    expect(sql).toContain(
      `(SELECT row_to_json(t) AS x, (status <> 'draft') AS keep, ROW(t."status", t."total") AS chg FROM sidekick_new AS t) AS n, ` +
        `(SELECT row_to_json(t) AS x, ROW(t."status", t."total") AS chg FROM sidekick_old AS t) AS o`,
    );
    expect(sql).toContain('WHERE NOT EXISTS (SELECT 1 FROM sidekick_new OFFSET 1) AND n.keep AND n.chg IS DISTINCT FROM o.chg');
    expect(sql).toContain(
      `(SELECT row_number() OVER () AS r, row_to_json(t) AS x, (status <> 'draft') AS keep, ROW(t."status", t."total") AS chg FROM sidekick_new AS t) AS n`,
    );
    expect(sql).toContain('WHERE n.r IS NULL OR (n.keep AND (o.r IS NULL OR n.chg IS DISTINCT FROM o.chg))');
    // No id is taken up front: the wake-up test looks at the ids the rows that passed took.
    expect(sql).toContain('IF NOT FOUND AND EXISTS (SELECT 1 FROM sidekick_new OFFSET 1) THEN');
    expect(sql).toContain('SELECT bool_or(EXISTS (SELECT 1 FROM unnest(w.event_ids) AS i WHERE i % 1024 < 8)) INTO v_wake FROM w;');
    expect(sql).not.toContain("v_wake := nextval('sidekick.outbox_id_seq')");
  });

  it('filters the row trigger before it computes or writes anything, and leaves unfiltered triggers as they were', () => {
    const sql = captureStatements([resolved({ mode: 'row', where: 'total > 0', changed: ['total'], operations: { update: ['id'], delete: '*' } })]);
    expect(sql).toContain(
      '  n jsonb;\n  o jsonb;\nBEGIN\n  IF ROW(NEW."total") IS NOT DISTINCT FROM ROW(OLD."total") THEN\n    RETURN NULL;\n  END IF;',
    );
    expect(sql).toContain(
      'IF NOT EXISTS (SELECT 1 FROM (SELECT NEW.*) AS t WHERE (total > 0)) THEN\n    RETURN NULL;\n  END IF;\n  n := to_jsonb(NEW);',
    );
    expect(sql).toContain('IF NOT EXISTS (SELECT 1 FROM (SELECT OLD.*) AS t WHERE (total > 0)) THEN');
    expect(sql).not.toContain('IF ROW(OLD');
    const plain = captureStatements([resolved()]);
    expect(plain).not.toContain('variable_conflict');
    expect(plain).not.toContain('keep');
    // `changed` alone does not touch INSERT and DELETE.
    const changedOnly = captureStatements([resolved({ changed: ['status'] })]);
    expect(changedOnly.match(/variable_conflict/g)).toHaveLength(1);
  });
});

describe('the wake-up mark', () => {
  it('uses the same modulus and window in the migration as in the generated triggers', async () => {
    const { readFileSync } = await import('node:fs');
    const { WAKE_MODULUS, WAKE_WINDOW } = await import('../../src/outbox/queries.js');
    const sql = readFileSync(new URL('../../sql/002_outbox.sql', import.meta.url), 'utf8');
    expect(sql).toContain(`(s.last_value / ${WAKE_MODULUS} + 1) * ${WAKE_MODULUS}`);
    expect(sql).toContain(`s.last_value % ${WAKE_MODULUS} <> 0`);
    expect(sql).toContain(`IF v_id % ${WAKE_MODULUS} < ${WAKE_WINDOW} THEN`);
  });
});
