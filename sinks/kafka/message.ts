import { compileTemplate, envelopeJson, payloadText, type Envelope } from '../../src/envelope.js';
import { FatalError } from '../../src/errors.js';

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
export const CLOUDEVENTS_TYPE = 'application/cloudevents+json; charset=UTF-8';

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

function defaultCloudEventType(e: Envelope): string {
  if (e.source === 'table' && e.op !== undefined) return `pg-sidekick.row.${e.op.toLowerCase()}`;
  return `pg-sidekick.${e.source}`;
}

/**
 * Compiles the sink's templates once and returns the function that turns an envelope into a
 * record. It throws FatalError for an envelope that cannot become a valid record (the topic
 * template needs a field the event lacks, or renders an illegal topic name): retrying would
 * produce the same record.
 */
export function createMessageBuilder(options: MessageOptions): (e: Envelope) => KafkaRecord {
  const topicOf = compileTemplate(options.topic);
  const topicNeeds = templateFields(options.topic);
  const keyOf = options.key === null ? undefined : compileTemplate(options.key);
  const ce = options.format === 'cloudevents'
    ? {
      mode: options.cloudevents?.mode ?? 'binary',
      source: compileTemplate(options.cloudevents?.source ?? '/pg-sidekick/{channel}'),
      type: options.cloudevents?.type === undefined ? defaultCloudEventType : compileTemplate(options.cloudevents.type),
    }
    : undefined;

  return (e) => {
    for (const field of topicNeeds) {
      if ((e as unknown as Record<string, unknown>)[field] === undefined) {
        throw new FatalError('KAFKA_TOPIC_TEMPLATE', `topic template "${options.topic}" needs {${field}}, which this ${e.source} event `
          + `on channel "${e.channel}" does not have; set a topic template this event can fill (e.g. "pg.{channel}")`);
      }
    }
    const topic = topicOf(e);
    if (!isValidTopic(topic)) {
      throw new FatalError('KAFKA_TOPIC_INVALID', `"${topic}" (from topic template "${options.topic}") is not a valid Kafka topic name `
        + '(1-249 characters of A-Z a-z 0-9 . _ -)');
    }
    // No key → the channel: the bridge already delivers a channel's keyless events one after
    // another, and one partition keeps that order on the broker.
    const key = keyOf === undefined ? null : (keyOf(e) || e.channel);
    const headers: Record<string, string> = { id: e.id, channel: e.channel, source: e.source };
    if (e.op !== undefined) headers.op = e.op;
    const at = Date.parse(e.at);
    const timestamp = Number.isFinite(at) ? String(at) : undefined;
    let value: string;

    if (options.format === 'envelope') {
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
      const c = ce as NonNullable<typeof ce>;
      const attributes: Record<string, string> = {
        specversion: '1.0',
        id: e.id,
        source: c.source(e),
        type: c.type(e),
        time: e.at,
      };
      if (e.key !== undefined) attributes.subject = e.key;
      // CloudEvents Kafka binding: the `partitionkey` extension maps to the record key.
      if (key !== null) attributes.partitionkey = key;
      const data = envelopeJson(e);
      if (c.mode === 'binary') {
        for (const [name, v] of Object.entries(attributes)) headers[`ce_${name}`] = v;
        headers['content-type'] = JSON_TYPE;
        value = JSON.stringify(data);
      } else {
        headers['content-type'] = CLOUDEVENTS_TYPE;
        value = JSON.stringify({ ...attributes, datacontenttype: JSON_TYPE, data });
      }
    }
    return timestamp === undefined ? { topic, key, value, headers } : { topic, key, value, headers, timestamp };
  };
}
