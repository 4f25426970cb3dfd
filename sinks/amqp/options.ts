import { z } from 'zod';
import { cloudEventsShape, compileTemplate, duration } from '../../src/sink-kit.js';
import { BODY_FORMATS } from './body.js';

const template = (what: string) =>
  z.string().superRefine((value, ctx) => {
    try {
      compileTemplate(value);
    } catch (error) {
      ctx.addIssue({ code: 'custom', message: `${what}: ${(error as Error).message}` });
    }
  });

/** PEM text or a file to read it from (read once, when the sink is created). */
const tlsShape = z.looseObject({
  /** CA certificate(s), PEM text. */
  ca: z.string().optional(),
  /** Client certificate, PEM text. */
  cert: z.string().optional(),
  /** Client private key, PEM text. */
  key: z.string().optional(),
  /** Files holding the same PEM text. */
  caFile: z.string().optional(),
  certFile: z.string().optional(),
  keyFile: z.string().optional(),
  passphrase: z.string().optional(),
  /** Host name checked against the certificate. Default: the URL's host. */
  servername: z.string().optional(),
  /** Verify the broker's certificate. Default true. */
  rejectUnauthorized: z.boolean().optional(),
});

export const amqpOptions = {
  /** amqp:// or amqps:// URL with credentials and vhost, e.g. amqp://user:pass@host:5672/vhost. Required. */
  url: z.string().regex(/^amqps?:\/\//i, 'must be an amqp:// or amqps:// URL'),
  /**
   * Exchange to publish to. Default "pg-sidekick". "" is RabbitMQ's default exchange, where the
   * routing key is a queue name (and nothing is declared).
   */
  exchange: z.string().max(255).default('pg-sidekick'),
  /** Type used when declaring the exchange: topic (default) | direct | fanout | headers. */
  exchangeType: z.enum(['topic', 'direct', 'fanout', 'headers']).default('topic'),
  /**
   * true (default): declare the exchange (durable) on every connect. false: only check that it
   * exists; a missing exchange keeps the sink unavailable (events wait) and is logged.
   */
  declare: z.boolean().default(true),
  /** Routing key template. Default "{channel}.{op}" (row changes: "public.orders.INSERT"). */
  routingKey: template('routingKey').default('{channel}.{op}'),
  /** Body: envelope (default, JSON) | payload (what was sent / the row image) | cloudevents (structured JSON). */
  format: z.enum(BODY_FORMATS).default('envelope'),
  /** `format: cloudevents` only: the `source` and `type` templates (docs/cloudevents.md). */
  cloudevents: z.strictObject(cloudEventsShape).prefault({}),
  /** deliveryMode 2: the broker writes the message to disk in durable queues. Default true. */
  persistent: z.boolean().default(true),
  /** Content type property. Default: what the format implies (application/json, …). */
  contentType: z.string().min(1).optional(),
  /** Static headers added to every message. The envelope headers (source, channel, op, …) win on a clash. */
  headers: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])).default({}),
  /** Publish with the mandatory flag: a message no queue is bound for comes back. Default true. */
  mandatory: z.boolean().default(true),
  /**
   * What a returned (unroutable) message is: retry (default; e.g. the consumer has not bound its
   * queue yet, counts against retry.attempts) | fatal (dead-lettered at once).
   */
  unroutable: z.enum(['retry', 'fatal']).default('retry'),
  /** AMQP heartbeat; a dead peer is noticed after about two of them. 0 disables. Default 30s. */
  heartbeat: duration.default(30_000),
  /** TCP connect + AMQP handshake timeout. Default 10s. */
  connectTimeout: duration.default(10_000),
  /** How long a publish may wait for the broker's confirm before it counts as failed (retriable). Default 30s. */
  confirmTimeout: duration.default(30_000),
  /** TLS settings for amqps:// (passed to Node's tls.connect). */
  tls: tlsShape.optional(),
};

export type AmqpOptions = z.infer<z.ZodObject<typeof amqpOptions>>;
