import { defineSink } from '../../src/sink-kit.js';
import { kafkaOptions } from './options.js';
import { createKafkaSink } from './sink.js';

/**
 * `type: kafka` — produces each event as one Kafka record with kafkajs.
 *
 * ```yaml
 * sinks:
 *   kafka:
 *     type: kafka
 *     brokers: ${KAFKA_BROKERS}            # "host:9092,host2:9092" or a list
 *     topic: "pg.{schema}.{table}"         # must exist: never auto-created
 *     key: "{key}"                         # same row → same partition → order kept
 *     format: envelope                     # envelope | payload | cloudevents
 *     acks: all                            # all | 1 | 0
 *     compression: gzip                    # none | gzip
 *     batch: { size: 500, linger: 5ms }
 * ```
 * Every record carries the headers `id` (the envelope id: the idempotency key), `channel`,
 * `source`, `op` (row changes) and `content-type`; its timestamp is the event time. See docs/kafka.md.
 */
export const kafkaSink = defineSink({
  type: 'kafka',
  description: 'produce events to Kafka topics (kafkajs): topic and key templates, JSON/CloudEvents, acks, gzip',
  options: kafkaOptions,
  // Kafka is built for batches: 500 records per produce request, 8 requests in flight.
  defaults: { concurrency: 8, batchSize: 500 },
  create(options, context) {
    return createKafkaSink(options, context);
  },
});
