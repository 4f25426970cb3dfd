import type { z } from 'zod';
import type { Logger } from 'pino';
import type { Envelope } from './envelope.js';
import type { SidekickError } from './errors.js';

/** The outcome of one envelope of a batch. */
export type ItemOutcome = { readonly ok: true } | { readonly ok: false; readonly error: SidekickError };
/** One outcome per envelope, same length and order as the batch. */
export type SendResult = readonly ItemOutcome[];

export const OK: ItemOutcome = Object.freeze({ ok: true });

/**
 * The sink contract. The dispatcher owns retries, backoff, ordering and dead letters; a sink only
 * says, per envelope, whether it was delivered and, if not, whether another attempt could succeed
 * (RetriableError) or not (FatalError).
 *
 * - `start` connects; it may throw (retried with backoff by the caller).
 * - `send` gets at most `batch.size` envelopes and must honour `signal` (abort → reject or return
 *   quickly). Throwing fails the whole batch with that error. A batch holds at most one envelope per
 *   ordering key, unless the sink declares `ordered`.
 * - `stop` is idempotent and finishes in-flight work.
 * - `check` (optional) proves connectivity for `sidekick check` without sending anything.
 */
export interface Sink {
  readonly name: string;
  readonly type: string;
  /**
   * True when the sink delivers a batch in order (a producer, a pipeline, a confirm channel): the
   * dispatcher may then put several consecutive envelopes of one key into a batch, which is what
   * makes a busy NOTIFY channel fast. After a retriable failure of one of them, the envelopes of that
   * key after it are sent again, after it (at-least-once). Leave unset for sinks that send a batch's
   * items concurrently (webhook).
   */
  readonly ordered?: boolean;
  start(signal: AbortSignal): Promise<void>;
  send(batch: readonly Envelope[], signal: AbortSignal): Promise<SendResult>;
  stop(): Promise<void>;
  check?(signal: AbortSignal): Promise<string | void>;
}

/** What a sink factory gets besides its own validated options. */
export interface SinkContext {
  readonly name: string;
  readonly logger: Logger;
  /** The database connection settings of the bridge (used by sinks that run SQL). */
  readonly database: import('pg').ClientConfig;
  /** Where the stdout sink writes; injectable for tests. */
  readonly stdout?: NodeJS.WritableStream;
}

export interface SinkDefinition<Shape extends z.ZodRawShape = z.ZodRawShape> {
  /** The `type:` value in config. */
  readonly type: string;
  /** One line for `--help` and error messages. */
  readonly description: string;
  /** The sink's own options (the common `retry`, `concurrency`, `batch` keys are added by the core). */
  readonly options: Shape;
  /** Defaults for the common dispatcher options that suit this sink (e.g. batch size). */
  readonly defaults?: { concurrency?: number; batchSize?: number };
  create(options: z.infer<z.ZodObject<Shape>>, context: SinkContext): Sink;
}

export function defineSink<Shape extends z.ZodRawShape>(definition: SinkDefinition<Shape>): SinkDefinition<Shape> {
  return Object.freeze(definition);
}
