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

/**
 * Message bodies shared by the broker sinks (AMQP and Redis Streams), so that one event looks the
 * same whichever broker carries it.
 *
 * - `envelope` (default): the envelope's public JSON (`envelopeJson`).
 * - `payload`: what the application sent: the NOTIFY / publish payload verbatim; for a row change
 *   (which has no payload) the row image as JSON: `new` for INSERT/UPDATE, `old` for DELETE
 *   (skor's `data`).
 * - `cloudevents`: the project's one CloudEvents 1.0 mapping (src/cloudevents.ts, docs/cloudevents.md),
 *   structured-mode JSON, as the webhook and Kafka sinks send it.
 */
export type BodyFormat = 'envelope' | 'payload' | 'cloudevents';
export const BODY_FORMATS = ['envelope', 'payload', 'cloudevents'] as const;

/**
 * The event's operation as one word: the row operation (INSERT, UPDATE, DELETE, READ) for row
 * changes, otherwise the source in capitals (NOTIFY, PUBLISH, SCHEDULE) — what `{op}` renders in
 * every template (compileTemplate).
 */
export function opOf(e: Envelope): string {
  return e.op ?? e.source.toUpperCase();
}

/** Whether the `payload` body of this envelope is JSON (else it is plain text). */
function payloadIsJson(e: Envelope): boolean {
  if (e.payload === undefined) return true; // row image or null
  // A string payload is text, unless the raw NOTIFY text was a quoted JSON string.
  return typeof e.payload !== 'string' || e.raw?.trimStart().startsWith('"') === true;
}

export function payloadBody(e: Envelope): string {
  if (e.payload === undefined && e.source === 'table') {
    return JSON.stringify((e.op === 'DELETE' ? e.old : e.new) ?? null);
  }
  return payloadText(e);
}

export interface Body {
  readonly text: string;
  readonly contentType: string;
}

const envelopeBody = (e: Envelope): Body => ({ text: JSON.stringify(envelopeJson(e)), contentType: 'application/json' });
const payloadOnly = (e: Envelope): Body => ({
  text: payloadBody(e),
  contentType: payloadIsJson(e) ? 'application/json' : 'text/plain; charset=utf-8',
});

/**
 * A route's transform shaped the event (docs/shaping.md): its result is the body in `envelope` and
 * `payload` format, and the CloudEvent's `data` in `cloudevents` (src/cloudevents.ts).
 */
function shapedOr(render: (e: Envelope) => Body): (e: Envelope) => Body {
  return (e) => (e.body === undefined ? render(e) : { text: e.body.text, contentType: shapedContentType(e.body) });
}

/**
 * The body text and its MIME type for an envelope in the given format (templates compiled once).
 * `cloudevents` may throw FatalError TEMPLATE_FIELD_MISSING (a `source`/`type` template the event
 * cannot fill): one event's failure.
 */
export function createBodyFormatter(format: BodyFormat, options: { cloudEvents?: CloudEventsOptions | undefined } = {}): (e: Envelope) => Body {
  switch (format) {
    case 'envelope':
      return shapedOr(envelopeBody);
    case 'payload':
      return shapedOr(payloadOnly);
    case 'cloudevents': {
      const toCloudEvent = createCloudEvents(options.cloudEvents);
      return (e) => ({ text: structuredCloudEvent(toCloudEvent(e)), contentType: CLOUDEVENTS_CONTENT_TYPE });
    }
  }
}
