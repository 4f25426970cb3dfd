import type { SinkDefinition } from '../src/sink-kit.js';
import { laterSink } from '../src/scheduler/later-sink.js';
import { amqpSink } from './amqp/index.js';
import { kafkaSink } from './kafka/index.js';
import { redisStreamSink } from './redis-stream/index.js';
import { stdoutSink } from './stdout/index.js';
import { webhookSink } from './webhook/index.js';

/**
 * Every sink type pg-sidekick knows, registered explicitly (no import side effects). Each entry is a
 * TypedSinkDefinition, which is a SinkDefinition as it is (see src/sink.ts for why no cast is needed).
 * `later` is the scheduler's intake and lives beside it (src/scheduler/later-sink.ts).
 */
export const sinkDefinitions: readonly SinkDefinition[] = [stdoutSink, webhookSink, kafkaSink, amqpSink, redisStreamSink, laterSink];
