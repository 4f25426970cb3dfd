import {
  cloudEventData,
  CLOUDEVENTS_CONTENT_TYPE,
  compileTemplate,
  createCloudEvents,
  envelopeJson,
  FatalError,
  payloadText,
  shapedContentType,
  structuredCloudEvent,
  type Envelope,
} from '../../src/sink-kit.js';

/** One Kafka record, ready for kafkajs (`value` and header values as strings). */
export interface KafkaRecord {
  readonly topic: string;
  readonly key: string | null;
  readonly value: string;
  readonly headers: Record<string, string>;
  /** Record timestamp (ms since epoch, as kafkajs wants it): when the event happened. */
  readonly timestamp?: string;
}

export type KafkaFormat = 'envelope' | 'payload' | 'cloudevents';

export interface MessageOptions {
  readonly topic: string;
  readonly key: string | null;
  readonly format: KafkaFormat;
  readonly cloudevents?: { readonly mode: 'binary' | 'structured'; readonly source: string; readonly type?: string | undefined } | undefined;
}

export const JSON_TYPE = 'application/json';
export const TEXT_TYPE = 'text/plain; charset=utf-8';
export const CLOUDEVENTS_TYPE = CLOUDEVENTS_CONTENT_TYPE;

/** Kafka's own rule for topic names. */
const TOPIC_NAME = /^[A-Za-z0-9._-]{1,249}$/;

export function isValidTopic(name: string): boolean {
  return TOPIC_NAME.test(name) && name !== '.' && name !== '..';
}

/** The `{field}` names a template uses. */
export function templateFields(template: string): string[] {
  return [...template.matchAll(/\{([^{}]*)\}/g)].map((m) => m[1] as string);
}

/** The row a `payload`-format row change carries: the new row, or the old one for a DELETE. */
function rowImage(e: Envelope): unknown {
  return (e.op === 'DELETE' ? e.old : e.new) ?? e.new ?? e.old ?? null;
}

/**
 * Compiles the sink's templates once and returns the function that turns an envelope into a
 * record. It throws FatalError for an envelope that cannot become a valid record (a topic or
 * CloudEvents template needs a field the event lacks: TEMPLATE_FIELD_MISSING; the topic renders an
 * illegal name: KAFKA_TOPIC_INVALID): retrying would produce the same record.
 */
export function createMessageBuilder(options: MessageOptions): (e: Envelope) => KafkaRecord {
  const topicOf = compileTemplate(options.topic, undefined, { name: 'topic' });
  // The key's documented fallback: a template that renders empty (a NOTIFY has no {key}) → the channel.
  const keyOf = options.key === null ? undefined : compileTemplate(options.key, undefined, { missing: 'empty' });
  const mode = options.cloudevents?.mode ?? 'binary';
  const toCloudEvent = options.format === 'cloudevents' ? createCloudEvents(options.cloudevents) : undefined;

  return (e) => {
    const topic = topicOf(e);
    if (!isValidTopic(topic)) {
      throw new FatalError(
        'KAFKA_TOPIC_INVALID',
        `"${topic}" (from topic template "${options.topic}") is not a valid Kafka topic name (1-249 characters of A-Z a-z 0-9 . _ -)`,
      );
    }
    // No key → the channel: the bridge already delivers a channel's keyless events one after
    // another, and one partition keeps that order on the broker.
    const key = keyOf === undefined ? null : keyOf(e) || e.channel;
    const headers: Record<string, string> = { id: e.id };
    // Durable events: the outbox number, growing in commit order per key (dedupe on id, order on seq).
    if (e.seq !== undefined) headers.seq = e.seq;
    headers.channel = e.channel;
    headers.source = e.source;
    if (e.op !== undefined) headers.op = e.op;
    const at = Date.parse(e.at);
    const timestamp = Number.isFinite(at) ? String(at) : undefined;
    let value: string;

    if (e.body !== undefined && options.format !== 'cloudevents') {
      // A route's transform shaped the event (docs/shaping.md): its result is the value; key and headers stay the envelope's.
      value = e.body.text;
      if (options.format === 'payload' || !e.body.json) headers['content-type'] = shapedContentType(e.body);
    } else if (options.format === 'envelope') {
      // Always JSON: no content-type header (kafkajs spends ~1.6 µs encoding each header, per record).
      value = JSON.stringify(envelopeJson(e));
    } else if (options.format === 'payload') {
      if (e.source === 'table') {
        value = JSON.stringify(rowImage(e));
        headers['content-type'] = JSON_TYPE;
      } else {
        value = payloadText(e);
        headers['content-type'] = typeof e.payload === 'string' ? TEXT_TYPE : JSON_TYPE;
      }
    } else {
      const ce = (toCloudEvent as NonNullable<typeof toCloudEvent>)(e);
      // CloudEvents Kafka binding: the `partitionkey` extension maps to the record key.
      const partition = key === null ? undefined : { partitionkey: key };
      if (mode === 'binary') {
        for (const [name, v] of Object.entries(ce.attributes)) headers[`ce_${name}`] = v;
        if (partition) headers.ce_partitionkey = partition.partitionkey;
        headers['content-type'] = ce.datacontenttype;
        value = cloudEventData(ce);
      } else {
        headers['content-type'] = CLOUDEVENTS_TYPE;
        value = structuredCloudEvent(ce, partition);
      }
    }
    return timestamp === undefined ? { topic, key, value, headers } : { topic, key, value, headers, timestamp };
  };
}
