import { defineSink } from '../../src/sink-kit.js';
import { amqpOptions } from './options.js';
import { createAmqpSink } from './sink.js';

/**
 * `type: amqp` — publishes each event to a RabbitMQ exchange on a confirm channel: an event counts
 * as delivered only once the broker has confirmed it (and, with `mandatory`, routed it).
 *
 * ```yaml
 * sinks:
 *   rabbit:
 *     type: amqp
 *     url: ${AMQP_URL}                    # amqp://user:pass@host:5672/vhost
 *     exchange: pg-sidekick               # declared as a durable topic exchange
 *     routingKey: "{schema}.{table}.{op}"
 *     format: envelope
 *     unroutable: retry                   # or fatal
 * ```
 */
export const amqpSink = defineSink({
  type: 'amqp',
  description: 'publish events to a RabbitMQ (AMQP 0-9-1) exchange with publisher confirms',
  options: amqpOptions,
  defaults: { concurrency: 8, batchSize: 500 },
  create: createAmqpSink,
});
