import {
  CLOUDEVENTS_CONTENT_TYPE,
  createCloudEvents,
  envelopeJson,
  payloadText,
  shapedContentType,
  structuredCloudEvent,
  type CloudEventsOptions,
  type Envelope,
} from '../../src/sink-kit.js';

/** What goes on the wire for one envelope. */
export interface Rendered {
  readonly body: string;
  readonly contentType: string;
}

export const FORMATS = ['envelope', 'payload', 'skor', 'cloudevents'] as const;
export type Format = (typeof FORMATS)[number];

const JSON_TYPE = 'application/json';
const TEXT_TYPE = 'text/plain; charset=utf-8';

/** Whether the event's original payload text is JSON (it is when it parsed into a non-string value). */
export function payloadIsJson(e: Envelope): boolean {
  if (e.raw !== undefined) return typeof e.payload !== 'string' || e.payload !== e.raw;
  return typeof e.payload !== 'string';
}

/** A row change carries row images; everything else (NOTIFY, publish, schedule) carries a payload. */
function isRowChange(e: Envelope): boolean {
  return e.op !== undefined && e.table !== undefined;
}

/** The row a row change is about: the new image, or the old one for a DELETE (what skor sent). */
function rowOf(e: Envelope): unknown {
  return (e.op === 'DELETE' ? (e.old ?? e.new) : (e.new ?? e.old)) ?? null;
}

/** `format: envelope` — the envelope's public JSON (the default). */
function envelope(e: Envelope): Rendered {
  return { body: JSON.stringify(envelopeJson(e)), contentType: JSON_TYPE };
}

/**
 * `format: payload` — the NOTIFY payload byte for byte; JSON content type when it parses, text
 * otherwise. A row change has no payload of its own: its row (new, or old for DELETE) is sent.
 */
function payload(e: Envelope): Rendered {
  if (e.payload === undefined && e.raw === undefined && isRowChange(e)) {
    return { body: JSON.stringify(rowOf(e)), contentType: JSON_TYPE };
  }
  return { body: payloadText(e), contentType: payloadIsJson(e) ? JSON_TYPE : TEXT_TYPE };
}

/**
 * `format: skor` — exactly what Hasura's skor POSTed, so its receivers keep working unchanged:
 * `{"table","schema","op","data"}` for a row change (data = new row, old row for DELETE), and for a
 * notification (e.g. from skor's own `notify_skor_*` triggers on channel `skor`) the payload
 * verbatim, as skor did. Always `Content-Type: application/json`, like skor.
 */
function skor(e: Envelope): Rendered {
  if (isRowChange(e)) {
    return {
      body: JSON.stringify({ table: e.table, schema: e.schema ?? null, op: e.op, data: rowOf(e) }),
      contentType: JSON_TYPE,
    };
  }
  return { body: payloadText(e), contentType: JSON_TYPE };
}

export interface FormatOptions {
  /** `format: cloudevents`: the `source` and `type` templates (see src/cloudevents.ts). */
  readonly cloudEvents?: CloudEventsOptions;
}

/** `format: cloudevents` — the project's one CloudEvents mapping (src/cloudevents.ts), structured JSON mode. */
function cloudevents(options: CloudEventsOptions | undefined): (e: Envelope) => Rendered {
  const toCloudEvent = createCloudEvents(options);
  return (e) => ({ body: structuredCloudEvent(toCloudEvent(e)), contentType: CLOUDEVENTS_CONTENT_TYPE });
}

/**
 * A route's transform shaped the event (docs/shaping.md): its result is the body in every format but
 * `cloudevents`, where it is the CloudEvent's `data`.
 */
function shapedOr(render: (e: Envelope) => Rendered): (e: Envelope) => Rendered {
  return (e) => (e.body === undefined ? render(e) : { body: e.body.text, contentType: shapedContentType(e.body) });
}

export function createFormatter(format: Format, options: FormatOptions = {}): (e: Envelope) => Rendered {
  switch (format) {
    case 'envelope':
      return shapedOr(envelope);
    case 'payload':
      return shapedOr(payload);
    case 'skor':
      return shapedOr(skor);
    case 'cloudevents':
      return cloudevents(options.cloudEvents);
  }
}
