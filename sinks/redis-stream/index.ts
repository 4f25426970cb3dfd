import { defineSink } from '../../src/sink-kit.js';
import { redisStreamOptions } from './options.js';
import { createRedisStreamSink } from './sink.js';

/**
 * `type: redis-stream` — appends each event to a Redis stream (XADD), a batch per pipeline.
 *
 * ```yaml
 * sinks:
 *   redis:
 *     type: redis-stream
 *     url: ${REDIS_URL}            # redis://[user:pass@]host:6379/0, rediss:// for TLS
 *     stream: "pg:{channel}"       # one stream per table / channel
 *     maxLen: 1000000              # XADD MAXLEN ~ 1000000
 *     format: envelope             # the `data` field: envelope | payload | cloudevents
 * ```
 */
export const redisStreamSink = defineSink({
  type: 'redis-stream',
  description: 'append events to Redis streams (pipelined XADD, optional MAXLEN ~ trimming)',
  options: redisStreamOptions,
  defaults: { concurrency: 4, batchSize: 500 },
  create: createRedisStreamSink,
});
