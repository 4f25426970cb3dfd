import { readFileSync } from 'node:fs';
import type pg from 'pg';
import { parseQualifiedName } from '../capture/spec.js';
import type { Config } from '../config.js';
import { type Envelope, type EnvelopeSource, shapedBody } from '../envelope.js';
import { ConfigError, errorMessage } from '../errors.js';
import { rowKey } from '../outbox/queries.js';
import { quoteIdent } from '../pg/quote.js';
import { createRouter, type RouteRule } from '../router.js';
import { compileFilter } from '../shape/filter.js';
import { type CompiledTransform, compileJsonata, loadModuleTransform } from '../shape/transform.js';
import type { SinkPreview } from '../sink.js';
import { connectDatabase, databaseFor } from './database.js';
import type { CommandIO } from './io.js';
import { loadConfigFor } from './run.js';

export interface PreviewOptions {
  readonly config: string;
  /** An envelope JSON file (`format: json` output): one object, an array, or one envelope per line. */
  readonly event?: string;
  /** Or: the last `limit` rows of this table, as op READ events. */
  readonly table?: string;
  /** Rows read with `table`. Default 1. */
  readonly limit?: number;
  /** `table` only: the database (default: the config's, DATABASE_URL, PG* variables). */
  readonly database?: string;
  readonly json?: boolean;
}

/** What one route does with one event, for one of its sinks. */
export interface SinkResult {
  readonly sink: string;
  readonly type: string;
  /** What the sink would send; absent with `error` (the event would be dead-lettered) or `unsupported`. */
  readonly preview?: SinkPreview;
  readonly error?: { readonly code: string; readonly message: string };
  readonly unsupported?: true;
}

export interface RouteResult {
  readonly route: string;
  readonly index: number;
  /** Whether one of the route's `from` globs matches the event's channel. */
  readonly channel: boolean;
  /** The filter's answer: true, false, an evaluation error (does not match), or absent without a filter. */
  readonly filter?: boolean | { readonly error: string };
  readonly matches: boolean;
  /** `dropped`: the transform gave null; an error object: it threw (the event would be dead-lettered). */
  readonly transform?: 'applied' | 'dropped' | { readonly error: string };
  readonly sinks: readonly SinkResult[];
}

export interface EventResult {
  readonly event: Record<string, unknown>;
  readonly routes: readonly RouteResult[];
}

const SOURCES = new Set<EnvelopeSource>(['notify', 'table', 'publish', 'schedule']);

/** Reads envelopes as `format: json` prints them: one JSON object, an array of them, or one per line. */
export function readEnvelopes(text: string, file: string): Envelope[] {
  let items: unknown[];
  try {
    const parsed: unknown = JSON.parse(text);
    items = Array.isArray(parsed) ? parsed : [parsed];
  } catch {
    try {
      items = text
        .split('\n')
        .filter((l) => l.trim() !== '')
        .map((l) => JSON.parse(l) as unknown);
    } catch (error) {
      throw new ConfigError(`--event ${file}: not JSON, nor one JSON envelope per line: ${errorMessage(error)}`);
    }
  }
  return items.map((item, i) => {
    if (item === null || typeof item !== 'object' || typeof (item as { channel?: unknown }).channel !== 'string') {
      throw new ConfigError(`--event ${file}: envelope ${i + 1} is not an object with a "channel" string`);
    }
    const e = item as Record<string, unknown>;
    const source = (e.source ?? (e.op === undefined ? 'notify' : 'table')) as EnvelopeSource;
    if (!SOURCES.has(source)) throw new ConfigError(`--event ${file}: envelope ${i + 1} has an unknown source "${String(e.source)}"`);
    return { ...e, id: String(e.id ?? `preview-${i + 1}`), source, at: String(e.at ?? new Date().toISOString()) } as unknown as Envelope;
  });
}

/**
 * The last `limit` rows of a table as op READ events, the way `sidekick backfill` makes them (the
 * whole row as `new`, keyed by the primary key); "last" by the primary key, descending. Read-only.
 */
async function tableEnvelopes(client: pg.Client, table: string, limit: number): Promise<Envelope[]> {
  let name: { schema: string; table: string };
  try {
    name = parseQualifiedName(table);
  } catch (error) {
    throw new ConfigError(`--table: ${errorMessage(error)}`);
  }
  const { rows: pk } = await client.query<{ pk: string[] | null }>(
    `SELECT (SELECT array_agg(a.attname::text ORDER BY k.ord) FROM pg_index i
              CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
              JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
             WHERE i.indrelid = c.oid AND i.indisprimary) AS pk
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2`,
    [name.schema, name.table],
  );
  if (pk.length === 0) throw new ConfigError(`--table: table ${name.schema}.${name.table} does not exist`);
  const key = pk[0]?.pk ?? [];
  const order = key.length > 0 ? `ORDER BY ${key.map((k) => `${quoteIdent(k)} DESC`).join(', ')}` : '';
  const { rows } = await client.query<{ row: Record<string, unknown> }>(
    `SELECT to_jsonb(t) AS row FROM ${quoteIdent(name.schema)}.${quoteIdent(name.table)} t ${order} LIMIT ${Math.max(1, Math.floor(limit))}`,
  );
  const at = new Date().toISOString();
  return rows.reverse().map((r, i) => {
    const k = rowKey(undefined, r.row, key);
    return {
      id: `preview-${i + 1}`,
      source: 'table',
      channel: `${name.schema}.${name.table}`,
      op: 'READ',
      schema: name.schema,
      table: name.table,
      ...(k === undefined ? {} : { key: k }),
      new: r.row,
      old: null,
      at,
    } satisfies Envelope;
  });
}

function failure(error: unknown): { code: string; message: string } {
  const code = (error as { code?: unknown })?.code;
  return { code: typeof code === 'string' ? code : 'ERROR', message: errorMessage(error) };
}

/**
 * Evaluates every route for every event as the pipeline would (channel globs, CEL filter, transform)
 * and renders what each of the route's sinks would send, with the sinks' own pure builders. Sends
 * nothing and connects to no broker.
 */
export async function previewEvents(config: Config, events: readonly Envelope[]): Promise<EventResult[]> {
  const renderers = new Map<string, ((e: Envelope) => SinkPreview) | undefined>();
  for (const entry of config.sinks) renderers.set(entry.name, entry.definition.preview?.(entry.options as never));
  const types = new Map(config.sinks.map((s) => [s.name, s.type]));
  const routes = config.routes.map((rule: RouteRule, index) => {
    let transform: CompiledTransform | undefined;
    if (typeof rule.transform === 'string') transform = compileJsonata(rule.transform);
    else if (rule.transform) transform = loadModuleTransform(rule.transform.module).transform;
    return {
      rule,
      index,
      label: rule.name ?? String(index),
      // The router's own channel matching, without the filter (evaluated below, to report it).
      channel: createRouter([{ from: rule.from, to: ['x'] }]),
      filter: rule.filter === undefined ? undefined : compileFilter(rule.filter),
      transform,
    };
  });
  const out: EventResult[] = [];
  for (const e of events) {
    const results: RouteResult[] = [];
    for (const r of routes) {
      const channel = r.channel.route(e).length > 0;
      let filter: RouteResult['filter'];
      if (r.filter) {
        const answer = r.filter(e);
        filter = answer instanceof Error ? { error: answer.message } : answer;
      }
      const matches = channel && (filter === undefined || filter === true);
      let transform: RouteResult['transform'];
      let shaped: Envelope = e;
      if (matches && r.transform) {
        try {
          const value = await r.transform(e);
          if (value === undefined) transform = 'dropped';
          else {
            shaped = { ...e, body: shapedBody(value) };
            transform = 'applied';
          }
        } catch (error) {
          transform = { error: errorMessage(error) };
        }
      }
      const sinks: SinkResult[] = [];
      if (matches && (transform === undefined || transform === 'applied')) {
        for (const sink of r.rule.to) {
          const type = types.get(sink) ?? '?';
          const render = renderers.get(sink);
          if (!render) sinks.push({ sink, type, unsupported: true });
          else {
            try {
              sinks.push({ sink, type, preview: render(shaped) });
            } catch (error) {
              sinks.push({ sink, type, error: failure(error) });
            }
          }
        }
      }
      results.push({
        route: r.label,
        index: r.index,
        channel,
        ...(filter === undefined ? {} : { filter }),
        matches,
        ...(transform === undefined ? {} : { transform }),
        sinks,
      });
    }
    const { raw: _raw, body: _body, ...event } = e as Envelope & { raw?: unknown };
    out.push({ event: event as Record<string, unknown>, routes: results });
  }
  return out;
}

const indent = (text: string, by: string) => text.replace(/\n(?!$)/g, `\n${by}`);

/** The human-readable form: one block per event, one line per route, the sink's message below it. */
export function formatPreview(results: readonly EventResult[]): string {
  let text = '';
  for (const { event, routes } of results) {
    const what = [event.op ?? String(event.source).toUpperCase(), event.channel, event.key === undefined ? '' : `key ${String(event.key)}`];
    text += `event ${String(event.id)}: ${what.filter(Boolean).join(' ')}\n`;
    for (const r of routes) {
      const head = `  route ${r.route === String(r.index) ? r.index : `${r.route} (routes[${r.index}])`}:`;
      if (!r.channel) {
        text += `${head} no match (channel)\n`;
        continue;
      }
      if (r.filter !== undefined && r.filter !== true) {
        text += `${head} no match (filter ${r.filter === false ? 'false' : `error: ${r.filter.error}`})\n`;
        continue;
      }
      if (r.transform === 'dropped') {
        text += `${head} match; the transform gave null: dropped, nothing is sent\n`;
        continue;
      }
      if (typeof r.transform === 'object') {
        text += `${head} match; the transform failed (dead letter TRANSFORM_FAILED): ${r.transform.error}\n`;
        continue;
      }
      text += `${head} match${r.transform === 'applied' ? ' (transformed)' : ''}\n`;
      for (const s of r.sinks) {
        const sinkHead = `    → ${s.sink} (${s.type})`;
        if (s.unsupported) text += `${sinkHead}: no preview for this sink type\n`;
        else if (s.error) text += `${sinkHead}: dead letter ${s.error.code}: ${s.error.message}\n`;
        else if (s.preview) {
          const target = Object.entries(s.preview.target)
            .map(([k, v]) => `${k} ${v === null ? '(none)' : v}`)
            .join(', ');
          text += `${sinkHead}: ${target}\n`;
          for (const [name, value] of Object.entries(s.preview.headers)) text += `        ${name}: ${value}\n`;
          text += `        body: ${indent(s.preview.body.replace(/[\n\0]$/, ''), '              ')}\n`;
        }
      }
    }
  }
  return text;
}

/**
 * `sidekick preview --config FILE (--event FILE.json | --table T [--limit N]) [--json]`: what each
 * route and sink would do with the events, sending nothing. Exit 0; a config or input error throws.
 */
export async function previewCommand(options: PreviewOptions, io: CommandIO): Promise<number> {
  if ((options.event === undefined) === (options.table === undefined)) throw new ConfigError('preview: give either --event FILE or --table TABLE');
  const config = loadConfigFor(options.config, io);
  let events: Envelope[];
  if (options.event !== undefined) {
    let text: string;
    try {
      text = readFileSync(options.event, 'utf8');
    } catch (error) {
      throw new ConfigError(`--event ${options.event}: ${errorMessage(error)}`);
    }
    events = readEnvelopes(text, options.event);
  } else {
    const client = await connectDatabase(
      databaseFor({ config: options.config, ...(options.database ? { database: options.database } : {}) }, io),
      io,
    );
    try {
      events = await tableEnvelopes(client, options.table as string, options.limit ?? 1);
    } finally {
      await client.end().catch(() => {});
    }
  }
  const results = await previewEvents(config, events);
  io.stdout.write(options.json ? `${JSON.stringify(results, null, 2)}\n` : formatPreview(results));
  return 0;
}
