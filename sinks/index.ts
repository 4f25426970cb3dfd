import type { SinkDefinition } from '../src/sink.js';
import { laterSink } from './later/index.js';
import { stdoutSink } from './stdout/index.js';

/** Every sink type pg-sidekick knows, registered explicitly (no import side effects). */
export const sinkDefinitions: readonly SinkDefinition[] = [
  stdoutSink as unknown as SinkDefinition,
  laterSink as unknown as SinkDefinition,
];
