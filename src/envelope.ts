import { randomUUID } from 'node:crypto';
import { FatalError } from './errors.js';

export type EnvelopeSource = 'notify' | 'table' | 'publish' | 'schedule';
export type RowOp = 'INSERT' | 'UPDATE' | 'DELETE' | 'READ';

/**
 * One event on its way from PostgreSQL to the sinks. What `format: json` prints and what every sink
 * sends is `envelopeJson(envelope)`; `raw` (the payload text exactly as received) is kept beside it
 * so that payload formats can reproduce the original bytes.
 */
export interface Envelope {
  /**
   * Stable and unique: unique across databases and reinstalls (`<installation>-<seq>` for durable
   * events, a UUID for ephemeral ones), the same on every redelivery. Every sink's idempotency key.
   */
  readonly id: string;
  /**
   * Durable events only: the outbox sequence number as decimal text. A row's (a key's) events carry
   * growing numbers in commit order, so a consumer can skip what it already applied. Unique only
   * within one installation: deduplicate on `id`, order on `seq`.
   */
  readonly seq?: string;
  readonly source: EnvelopeSource;
  readonly channel: string;
  /** Parsed JSON when the payload is valid JSON, else the string itself. None for row changes. */
  readonly payload?: unknown;
  /** ISO-8601: when the event happened (commit time for row changes, arrival for NOTIFY). */
  readonly at: string;
  readonly op?: RowOp;
  readonly schema?: string;
  readonly table?: string;
  /** The ordering key: key columns' values as a string. Same key → delivered in order. */
  readonly key?: string;
  readonly new?: Record<string, unknown> | null;
  readonly old?: Record<string, unknown> | null;
  /** Transaction id (xid8) of the writer, for row changes. */
  readonly txid?: string;
  /** Sender backend pid, for NOTIFY. */
  readonly pid?: number;
  /** The payload text exactly as received (not part of the JSON form). */
  readonly raw?: string;
  /**
   * Set by the pipeline on the copy it hands to one sink when a route's `transform` shaped the event
   * (docs/shaping.md): what that sink sends instead of the envelope, in every format. Not part of the
   * JSON form; the id, key and headers stay the envelope's.
   */
  readonly body?: ShapedBody;
}

/** A transform's result, rendered once: a string is sent as it is (text), anything else as JSON. */
export interface ShapedBody {
  readonly value: unknown;
  readonly text: string;
  /** False for a string result (text/plain). */
  readonly json: boolean;
}

export const SHAPED_JSON_TYPE = 'application/json';
export const SHAPED_TEXT_TYPE = 'text/plain; charset=utf-8';

/**
 * Renders a transform's result (never null or undefined). Throws a TypeError for a value JSON cannot
 * hold (a BigInt, a cycle, a function alone), which the pipeline reports as that event's transform failure.
 */
export function shapedBody(value: unknown): ShapedBody {
  if (typeof value === 'string') return { value, text: value, json: false };
  const text = JSON.stringify(value) as string | undefined;
  if (text === undefined) throw new TypeError(`a transform result must be JSON or a string, not ${typeof value}`);
  return { value, text, json: true };
}

/** The content type of a shaped body. */
export function shapedContentType(body: ShapedBody): string {
  return body.json ? SHAPED_JSON_TYPE : SHAPED_TEXT_TYPE;
}

/** Parses a payload as JSON when it is JSON; otherwise it stays a string. Never throws. */
export function parsePayload(raw: string): unknown {
  // Cheap pre-check: most non-JSON payloads are rejected without a parse attempt.
  const first = raw.trimStart()[0];
  if (first === undefined) return raw;
  if (!'{["-0123456789tfn'.includes(first)) return raw;
  try {
    return JSON.parse(raw);
  } catch {
    return raw;
  }
}

export function notifyEnvelope(channel: string, raw: string, pid: number, at = new Date()): Envelope {
  return { id: randomUUID(), source: 'notify', channel, payload: parsePayload(raw), at: at.toISOString(), pid, raw };
}

/** The public JSON shape of an envelope (without `raw`); fields in a fixed, readable order. */
export function envelopeJson(e: Envelope): Record<string, unknown> {
  const out: Record<string, unknown> = { id: e.id };
  if (e.seq !== undefined) out.seq = e.seq;
  out.source = e.source;
  out.channel = e.channel;
  if (e.op !== undefined) out.op = e.op;
  if (e.schema !== undefined) out.schema = e.schema;
  if (e.table !== undefined) out.table = e.table;
  if (e.key !== undefined) out.key = e.key;
  if (e.new !== undefined) out.new = e.new;
  if (e.old !== undefined) out.old = e.old;
  if (e.payload !== undefined) out.payload = e.payload;
  out.at = e.at;
  if (e.txid !== undefined) out.txid = e.txid;
  if (e.pid !== undefined) out.pid = e.pid;
  return out;
}

/** The payload's original text: `raw` when known, else the JSON of the payload. */
export function payloadText(e: Envelope): string {
  if (e.raw !== undefined) return e.raw;
  return typeof e.payload === 'string' ? e.payload : JSON.stringify(e.payload ?? null);
}

/**
 * Fills `{field}` placeholders (topic, routing key, stream, URL, CloudEvents source …) from the
 * envelope. Unknown fields are an error when the template is compiled, not when an event arrives.
 * `{op}` is the row operation, or for other events their source in capitals (NOTIFY, PUBLISH,
 * SCHEDULE), so every event can fill it.
 */
export const TEMPLATE_FIELDS = ['id', 'source', 'channel', 'op', 'schema', 'table', 'key'] as const;
export type TemplateField = (typeof TEMPLATE_FIELDS)[number];

/** The stable code of an event that lacks a field its sink's template needs (dead-lettered, never retried). */
export const TEMPLATE_FIELD_MISSING = 'TEMPLATE_FIELD_MISSING';

export interface TemplateOptions {
  /**
   * `fail` (default): a field the event lacks (or has empty) throws a FatalError
   * `TEMPLATE_FIELD_MISSING`, so the event is dead-lettered with the reason instead of going to a
   * half-filled destination (`…/{schema}/{table}` → `…//` for a NOTIFY). `empty`: it renders as ""
   * (for templates with a documented fallback, e.g. the Kafka key's channel).
   */
  readonly missing?: 'fail' | 'empty';
  /** What the template is for, in the error message (e.g. `topic`, `url`). Default `template`. */
  readonly name?: string;
}

function templateValue(e: Envelope, field: string): string | undefined {
  const value = field === 'op' ? (e.op ?? e.source.toUpperCase()) : (e as unknown as Record<string, unknown>)[field];
  return value === undefined || value === null || value === '' ? undefined : String(value);
}

export function compileTemplate(template: string, encode: (s: string) => string = (s) => s, options: TemplateOptions = {}): (e: Envelope) => string {
  const parts = template.split(/(\{[^{}]*\})/);
  for (const p of parts) {
    if (p.startsWith('{') && p.endsWith('}') && !TEMPLATE_FIELDS.includes(p.slice(1, -1) as TemplateField)) {
      throw new Error(`unknown template field ${p} in "${template}" (known: ${TEMPLATE_FIELDS.map((f) => `{${f}}`).join(', ')})`);
    }
  }
  if (parts.length === 1) return () => template;
  // Decided once: odd parts are fields, even parts literal text (split with a capture group).
  const fields = parts.map((p, i) => (i % 2 === 1 ? p.slice(1, -1) : undefined));
  const fail = options.missing !== 'empty';
  const name = options.name ?? 'template';
  return (e) => {
    let out = '';
    for (let i = 0; i < parts.length; i++) {
      const field = fields[i];
      if (field === undefined) {
        out += parts[i];
        continue;
      }
      const value = templateValue(e, field);
      if (value !== undefined) out += encode(value);
      else if (fail) {
        // The same event would fail the same way on every attempt: fatal, with what to change.
        throw new FatalError(
          TEMPLATE_FIELD_MISSING,
          `${name} "${template}" needs {${field}}, which this ${e.source} event on channel ` +
            `"${e.channel}" does not have; use a ${name} every event routed to this sink can fill (e.g. {channel}), or route these events elsewhere`,
        );
      }
    }
    return out;
  };
}
