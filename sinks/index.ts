import type { SinkDefinition } from '../src/sink.js';
import { amqpSink } from './amqp/index.js';
import { kafkaSink } from './kafka/index.js';
import { redisStreamSink } from './redis-stream/index.js';
import { stdoutSink } from './stdout/index.js';
import { webhookSink } from './webhook/index.js';

/** Every sink type pg-sidekick knows, registered explicitly (no import side effects). */
export const sinkDefinitions: readonly SinkDefinition[] = [
  stdoutSink as unknown as SinkDefinition,
  webhookSink as unknown as SinkDefinition,
  kafkaSink as unknown as SinkDefinition,
  amqpSink as unknown as SinkDefinition,
  redisStreamSink as unknown as SinkDefinition,
];
