import { z } from 'zod';
import { compileTemplate, payloadText, type Envelope } from './envelope.js';

/**
 * The one CloudEvents 1.0 mapping of an envelope, shared by every sink that offers
 * `format: cloudevents` (webhook, Kafka, AMQP, Redis Streams), so one event is the same CloudEvent
 * whichever way it travels. docs/cloudevents.md documents it; the sink docs link there.
 *
 * | attribute         | value                                                                        |
 * |-------------------|------------------------------------------------------------------------------|
 * | `specversion`     | `1.0`                                                                        |
 * | `id`              | the envelope id (unique across databases and reinstalls; with `source`, the dedupe key) |
 * | `source`          | template, default `/pg-sidekick/{channel}` (a URI-reference; values URL-encoded) |
 * | `type`            | `pg-sidekick.row.insert\|update\|delete\|read`, `pg-sidekick.notify\|publish\|schedule` (or a template) |
 * | `subject`         | the event's ordering key (the row's key), when it has one                    |
 * | `time`            | when it happened (commit time for row changes)                               |
 * | `seq` (extension) | durable events: the outbox number, growing in commit order per key           |
 * | `datacontenttype` | `application/json`, or `text/plain` for a notification whose payload is not JSON |
 * | `data`            | a row change: `{op, schema, table, key, new, old, txid}`; otherwise the payload |
 *
 * When a route's transform shaped the event (docs/shaping.md), `data` is the transform's result.
 *
 * Why this shape: CloudEvents puts what every event has (id, origin, kind, time, subject) in
 * attributes that SDKs, brokers and routers read without parsing `data`; `data` holds the occurrence
 * itself, not the attributes a second time. `type` names the kind of occurrence (a fixed, small
 * vocabulary consumers can switch on and register schemas for), `source` names where it happened
 * (the table or channel), `subject` which row — the split the spec suggests and Debezium-style CDC
 * consumers expect.
 */

/** Structured mode's content type, lower-case as the spec writes it (the JS SDK rejects `UTF-8`). */
export const CLOUDEVENTS_CONTENT_TYPE = 'application/cloudevents+json; charset=utf-8';
export const DEFAULT_CLOUDEVENTS_SOURCE = '/pg-sidekick/{channel}';
const JSON_TYPE = 'application/json';
const TEXT_TYPE = 'text/plain';

/** A `{field}` template, compiled here so a typo is a config error with its path, not a runtime one. */
const template = z
  .string()
  .min(1)
  .superRefine((value, ctx) => {
    try {
      compileTemplate(value);
    } catch (error) {
      ctx.addIssue({ code: 'custom', message: (error as Error).message });
    }
  });

/** The `cloudevents:` options every sink with `format: cloudevents` accepts (Kafka adds `mode`). */
export const cloudEventsShape = {
  /** The `source` attribute, a template (values URL-encoded). Default "/pg-sidekick/{channel}". */
  source: template.default(DEFAULT_CLOUDEVENTS_SOURCE),
  /**
   * The `type` attribute, a template. Default: "pg-sidekick.row.insert|update|delete|read" for row
   * changes, "pg-sidekick.notify" / "pg-sidekick.publish" / "pg-sidekick.schedule" otherwise.
   */
  type: template.optional(),
};

export interface CloudEventsOptions {
  readonly source?: string | undefined;
  readonly type?: string | undefined;
}

/** One envelope as a CloudEvent: string attributes (extensions included), and its data. */
export interface CloudEvent {
  /** specversion, id, source, type, subject?, time, seq? — in that order, all strings. */
  readonly attributes: Record<string, string>;
  readonly datacontenttype: string;
  /** The data as a JSON value (`application/json`) or the text (`text/plain`). */
  readonly data: unknown;
}

export function defaultCloudEventType(e: Envelope): string {
  if (e.source === 'table' && e.op !== undefined) return `pg-sidekick.row.${e.op.toLowerCase()}`;
  return `pg-sidekick.${e.source}`;
}

/** A row change carries row images; everything else (NOTIFY, publish, schedule) carries a payload. */
function isRowChange(e: Envelope): boolean {
  return e.op !== undefined && e.table !== undefined;
}

/** Whether the event's payload is JSON: it is when it parsed into something other than its own text. */
function payloadIsJson(e: Envelope): boolean {
  if (e.raw !== undefined) return typeof e.payload !== 'string' || e.payload !== e.raw;
  return typeof e.payload !== 'string';
}

/**
 * Compiles the templates once; the function it returns maps an envelope to its CloudEvent. It throws
 * FatalError `TEMPLATE_FIELD_MISSING` for an event that cannot fill the `source` or `type` template.
 */
export function createCloudEvents(options: CloudEventsOptions = {}): (e: Envelope) => CloudEvent {
  const sourceOf = compileTemplate(options.source ?? DEFAULT_CLOUDEVENTS_SOURCE, encodeURIComponent, { name: 'cloudevents.source' });
  const typeOf = options.type === undefined ? defaultCloudEventType : compileTemplate(options.type, undefined, { name: 'cloudevents.type' });
  return (e) => {
    const attributes: Record<string, string> = { specversion: '1.0', id: e.id, source: sourceOf(e), type: typeOf(e) };
    if (e.key !== undefined) attributes.subject = e.key;
    attributes.time = e.at;
    // An extension (lower-case alphanumeric name). Not the Sequence extension's `sequence`: that one
    // must order lexicographically, and a consumer compares these as integers.
    if (e.seq !== undefined) attributes.seq = e.seq;
    // A route's transform shaped the event: its result is the data; the attributes stay the envelope's.
    if (e.body !== undefined) return { attributes, datacontenttype: e.body.json ? JSON_TYPE : TEXT_TYPE, data: e.body.value };
    if (isRowChange(e)) {
      const data: Record<string, unknown> = { op: e.op, schema: e.schema, table: e.table };
      if (e.key !== undefined) data.key = e.key;
      if (e.new !== undefined) data.new = e.new;
      if (e.old !== undefined) data.old = e.old;
      if (e.txid !== undefined) data.txid = e.txid;
      return { attributes, datacontenttype: JSON_TYPE, data };
    }
    if (payloadIsJson(e)) return { attributes, datacontenttype: JSON_TYPE, data: e.payload ?? null };
    return { attributes, datacontenttype: TEXT_TYPE, data: payloadText(e) };
  };
}

/** Structured mode: the whole event as one JSON document (content type CLOUDEVENTS_CONTENT_TYPE). */
export function structuredCloudEvent(ce: CloudEvent, extensions?: Readonly<Record<string, string>>): string {
  return JSON.stringify({ ...ce.attributes, ...extensions, datacontenttype: ce.datacontenttype, data: ce.data });
}

/** Binary mode: the data alone, as the message body (its content type is `ce.datacontenttype`). */
export function cloudEventData(ce: CloudEvent): string {
  return ce.datacontenttype === JSON_TYPE ? JSON.stringify(ce.data) : String(ce.data);
}
