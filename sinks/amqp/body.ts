import { envelopeJson, payloadText, type Envelope } from '../../src/envelope.js';

/**
 * Message bodies shared by the broker sinks (AMQP and Redis Streams), so that one event looks the
 * same whichever broker carries it.
 *
 * - `envelope` (default): the envelope's public JSON (`envelopeJson`).
 * - `payload`: what the application sent: the NOTIFY / publish payload verbatim; for a row change
 *   (which has no payload) the row image as JSON: `new` for INSERT/UPDATE, `old` for DELETE
 *   (skor's `data`).
 * - `cloudevents`: a CloudEvents 1.0 structured-mode JSON event whose `data` is the envelope; `type`
 *   is `pg-sidekick.row.insert|update|delete` for row changes, else `pg-sidekick.<source>` (the same
 *   attributes as the Kafka sink's).
 */
export type BodyFormat = 'envelope' | 'payload' | 'cloudevents';
export const BODY_FORMATS = ['envelope', 'payload', 'cloudevents'] as const;

/**
 * The event's operation as one word: the row operation (INSERT, UPDATE, DELETE, READ) for row
 * changes, otherwise the source in capitals (NOTIFY, PUBLISH, SCHEDULE). Used for `{op}` in
 * templates and for the `op` header/field, so a NOTIFY never yields an empty routing-key word.
 */
export function opOf(e: Envelope): string {
  return e.op ?? e.source.toUpperCase();
}

/** The envelope as templates see it: `{op}` filled for every source (see `opOf`). */
export function templateView(e: Envelope): Envelope {
  return e.op === undefined ? { ...e, op: opOf(e) as Envelope['op'] } : e;
}

/** Whether the `payload` body of this envelope is JSON (else it is plain text). */
function payloadIsJson(e: Envelope): boolean {
  if (e.payload === undefined) return true; // row image or null
  // A string payload is text, unless the raw NOTIFY text was a quoted JSON string.
  return typeof e.payload !== 'string' || (e.raw !== undefined && e.raw.trimStart().startsWith('"'));
}

export function payloadBody(e: Envelope): string {
  if (e.payload === undefined && e.source === 'table') {
    return JSON.stringify((e.op === 'DELETE' ? e.old : e.new) ?? null);
  }
  return payloadText(e);
}

export function cloudEvent(e: Envelope): Record<string, unknown> {
  const event: Record<string, unknown> = {
    specversion: '1.0',
    id: e.id,
    source: `/pg-sidekick/${e.channel}`,
    type: e.op === undefined ? `pg-sidekick.${e.source}` : `pg-sidekick.row.${e.op.toLowerCase()}`,
  };
  if (e.key !== undefined) event.subject = e.key;
  event.time = e.at;
  event.datacontenttype = 'application/json';
  event.data = envelopeJson(e);
  return event;
}

export interface Body {
  readonly text: string;
  readonly contentType: string;
}

/** The body text and its MIME type for one envelope in the given format. */
export function formatBody(e: Envelope, format: BodyFormat): Body {
  switch (format) {
    case 'envelope':
      return { text: JSON.stringify(envelopeJson(e)), contentType: 'application/json' };
    case 'payload':
      return { text: payloadBody(e), contentType: payloadIsJson(e) ? 'application/json' : 'text/plain; charset=utf-8' };
    case 'cloudevents':
      return { text: JSON.stringify(cloudEvent(e)), contentType: 'application/cloudevents+json; charset=UTF-8' };
  }
}
