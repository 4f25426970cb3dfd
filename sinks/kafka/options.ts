import { z } from 'zod';
import { cloudEventsShape, compileTemplate, duration } from '../../src/sink-kit.js';

/** A `{field}` template, compiled once here so a typo is a config error with its path, not a runtime one. */
const template = z.string().superRefine((value, ctx) => {
  try {
    compileTemplate(value);
  } catch (error) {
    ctx.addIssue({ code: 'custom', message: (error as Error).message });
  }
});

/** `brokers: [a:9092, b:9092]` or `brokers: "a:9092,b:9092"` (what `${KAFKA_BROKERS}` usually holds). */
const brokers = z.union([z.string(), z.array(z.string())]).transform((value, ctx) => {
  const list = (typeof value === 'string' ? value.split(',') : value).map((b) => b.trim()).filter(Boolean);
  if (list.length === 0) {
    ctx.addIssue({ code: 'custom', message: 'at least one broker address (host:port) is required' });
    return z.NEVER;
  }
  for (const b of list) {
    if (!/^[^\s:]+:\d{1,5}$/.test(b) && !/^\[[0-9a-fA-F:.]+\]:\d{1,5}$/.test(b)) {
      ctx.addIssue({ code: 'custom', message: `not a broker address: "${b}" (expected host:port)` });
      return z.NEVER;
    }
  }
  return list;
});

/** `all`/-1 (every in-sync replica), 1 (the leader), 0 (no answer at all). Numbers may arrive as strings from ${ENV}. */
const acks = z
  .union([z.literal('all'), z.literal(-1), z.literal(0), z.literal(1), z.enum(['-1', '0', '1'])], { error: 'expected all, 1 or 0 (-1 is all)' })
  .transform((v) => (v === 'all' ? -1 : Number(v)) as -1 | 0 | 1);

/** SASL settings, handed to kafkajs as they are. `oauthbearer` needs code (a token provider), so it is not offered. */
const sasl = z.discriminatedUnion('mechanism', [
  z.strictObject({ mechanism: z.literal('plain'), username: z.string(), password: z.string() }),
  z.strictObject({ mechanism: z.literal('scram-sha-256'), username: z.string(), password: z.string() }),
  z.strictObject({ mechanism: z.literal('scram-sha-512'), username: z.string(), password: z.string() }),
  z.strictObject({
    mechanism: z.literal('aws'),
    authorizationIdentity: z.string(),
    accessKeyId: z.string(),
    secretAccessKey: z.string(),
    sessionToken: z.string().optional(),
  }),
]);

/**
 * TLS: `true` (system CAs), or options for Node's `tls.connect` passed through to kafkajs
 * (`ca`, `cert`, `key`, `passphrase`, `servername`, `rejectUnauthorized`, … — PEM text, e.g. from ${ENV}).
 */
const ssl = z.union([z.boolean(), z.record(z.string(), z.unknown())]);

export const kafkaOptions = {
  /** Bootstrap brokers: a list of host:port, or one comma-separated string. Required. */
  brokers,
  /** The client id the brokers see (quotas, logs). Default "pg-sidekick". */
  clientId: z.string().min(1).default('pg-sidekick'),
  /**
   * Topic per event, a template of envelope fields: {id} {source} {channel} {op} {schema} {table} {key}.
   * Default "pg.{schema}.{table}" for row changes… but NOTIFY events have no table (they are
   * dead-lettered, TEMPLATE_FIELD_MISSING), so set this explicitly when you route plain channels
   * here (e.g. "pg.{channel}"). Topics must exist.
   */
  topic: template.default('pg.{schema}.{table}'),
  /**
   * Record key, a template (same fields as `topic`). Default "{key}": the row's key columns, so
   * every change of one row lands in one partition, in order. When the template renders empty
   * (a NOTIFY has no key) the channel name is the key, matching the order the bridge keeps
   * (per channel). `null` sends no key (round-robin over partitions, no order across them).
   */
  key: template.nullable().default('{key}'),
  /**
   * What the record value holds. Default "envelope".
   * - envelope: the envelope as JSON (id, source, channel, op, schema, table, key, new, old, payload, at, txid, pid);
   * - payload: the payload alone — a NOTIFY's text exactly as sent, a row change's row (`new`, or `old` for DELETE) as JSON;
   * - cloudevents: a CloudEvent (see `cloudevents`).
   */
  format: z.enum(['envelope', 'payload', 'cloudevents']).default('envelope'),
  /** CloudEvents options (only with `format: cloudevents`; the mapping: docs/cloudevents.md). */
  cloudevents: z
    .strictObject({
      /**
       * binary (default): attributes in `ce_*` headers, the data as the value (Kafka protocol binding);
       * structured: the whole event as JSON, content-type `application/cloudevents+json; charset=utf-8`.
       */
      mode: z.enum(['binary', 'structured']).default('binary'),
      ...cloudEventsShape,
    })
    .optional(),
  /** Acknowledgement required from the brokers: all (= -1, default) | 1 | 0. */
  acks: acks.default(-1),
  /** Record batch compression: none (default) | gzip. (snappy, lz4, zstd need codecs kafkajs does not ship.) */
  compression: z.enum(['none', 'gzip']).default('none'),
  /** How long to wait for a broker to answer a request (and for the produce acknowledgement). Default 30s. */
  timeout: duration.default(30_000),
  /** How long to wait for a TCP (+TLS) connection to a broker. Default 3s. */
  connectionTimeout: duration.default(3_000),
  /** TLS, passed through to kafkajs. Default: off. */
  ssl: ssl.optional(),
  /** SASL authentication, passed through to kafkajs: plain | scram-sha-256 | scram-sha-512 | aws. Default: none. */
  sasl: sasl.optional(),
};
