import type { SinkDefinition } from '../src/sink.js';
import { kafkaSink } from './kafka/index.js';
import { stdoutSink } from './stdout/index.js';
import { webhookSink } from './webhook/index.js';

/** Every sink type pg-sidekick knows, registered explicitly (no import side effects). */
export const sinkDefinitions: readonly SinkDefinition[] = [
  stdoutSink as unknown as SinkDefinition,
  webhookSink as unknown as SinkDefinition,
  kafkaSink as unknown as SinkDefinition,
];
