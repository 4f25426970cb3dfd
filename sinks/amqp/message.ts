import type { Options } from 'amqplib';
import { compileTemplate, type CloudEventsOptions, type Envelope } from '../../src/sink-kit.js';
import { createBodyFormatter, type BodyFormat } from './body.js';

/** One AMQP basic.publish: where it goes and what it carries. */
export interface OutgoingMessage {
  readonly routingKey: string;
  readonly content: Buffer;
  readonly properties: Options.Publish;
}

export interface MessageOptions {
  readonly routingKey: string;
  readonly format: BodyFormat;
  /** `format: cloudevents`: the `source` and `type` templates. */
  readonly cloudevents?: CloudEventsOptions | undefined;
  readonly persistent: boolean;
  readonly mandatory: boolean;
  /** Overrides the content type the format implies. */
  readonly contentType?: string | undefined;
  /** Static headers added to every message; the envelope's own headers win on a name clash. */
  readonly headers: Readonly<Record<string, string | number | boolean>>;
}

/**
 * Builds the message for an envelope. What lands on the broker:
 * - routing key: the `routingKey` template (`{op}` is the row op, or NOTIFY/PUBLISH/SCHEDULE); a
 *   field the event lacks throws FatalError TEMPLATE_FIELD_MISSING (dead letter), never an empty word;
 * - body: the format (`envelope` JSON by default);
 * - properties: `messageId` = envelope id (the idempotency key), `timestamp` = event time in
 *   seconds, `deliveryMode` 2 when persistent, `contentType`, `appId: pg-sidekick`;
 * - headers: the static `headers`, then `source` and `channel`, and `seq` (durable events: the
 *   outbox number, growing in commit order per key), `op`, `schema`, `table`, `key` when the
 *   envelope has them (the names the Kafka headers and Redis fields use too).
 */
export function createMessageBuilder(options: MessageOptions): (e: Envelope) => OutgoingMessage {
  const routingKey = compileTemplate(options.routingKey, undefined, { name: 'routingKey' });
  const formatBody = createBodyFormatter(options.format, { cloudEvents: options.cloudevents });
  const staticHeaders = { ...options.headers };
  return (e) => {
    const key = routingKey(e);
    const body = formatBody(e);
    const headers: Record<string, unknown> = { ...staticHeaders, source: e.source, channel: e.channel };
    if (e.seq !== undefined) headers.seq = e.seq;
    if (e.op !== undefined) headers.op = e.op;
    if (e.schema !== undefined) headers.schema = e.schema;
    if (e.table !== undefined) headers.table = e.table;
    if (e.key !== undefined) headers.key = e.key;
    const at = Date.parse(e.at);
    const properties: Options.Publish = {
      mandatory: options.mandatory,
      deliveryMode: options.persistent ? 2 : 1,
      messageId: e.id,
      contentType: options.contentType ?? body.contentType,
      appId: 'pg-sidekick',
      headers,
    };
    if (Number.isFinite(at)) properties.timestamp = Math.floor(at / 1000);
    return { routingKey: key, content: Buffer.from(body.text, 'utf8'), properties };
  };
}
