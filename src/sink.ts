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
  check?(signal: AbortSignal): Promise<string | undefined>;
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

/** Defaults for the common dispatcher options that suit a sink (e.g. its batch size). */
export interface SinkDefaults {
  readonly concurrency?: number;
  readonly batchSize?: number;
}

/** What a sink's `create` gets: the output of its option shape (defaults filled in, durations in ms). */
export type SinkOptions<Shape extends z.ZodRawShape> = z.output<z.ZodObject<Shape>>;

/**
 * A sink type as the registry (sinks/index.ts, the config parser) holds it: its option shape erased.
 *
 * Why `create(options: never, …)`: the registry holds sinks of different option types in one list,
 * so it cannot know the type of what `create` takes — only that it is what parsing the config with
 * this definition's own `options` produced (src/config.ts does exactly that). A parameter of type
 * `never` says so soundly: every TypedSinkDefinition is assignable to this type without a cast (a
 * function taking anything is a function taking `never`: parameters are contravariant), and a
 * caller must state, once, at the call site, that the options came from this definition's schema
 * (`create(entry.options as never, …)` in the bridge and in `sidekick check`). The alternatives were
 * worse: `SinkDefinition<any>` turns the checks off for everyone, and a `create(options: unknown)`
 * that parses again would run every option's transforms twice (a duration already in ms, a broker
 * list already split) and could reject what the config accepted.
 */
export interface SinkDefinition {
  /** The `type:` value in config. */
  readonly type: string;
  /** One line for `--help` and error messages. */
  readonly description: string;
  /** The sink's own options (the common `retry`, `concurrency`, `batch` keys are added by the core). */
  readonly options: z.ZodRawShape;
  /** Defaults for the common dispatcher options that suit this sink (e.g. batch size). */
  readonly defaults?: SinkDefaults;
  readonly create: (options: never, context: SinkContext) => Sink;
}

/** A sink type as its module writes it (`defineSink({...})`): `create` takes its own options, typed. */
export interface TypedSinkDefinition<Shape extends z.ZodRawShape> extends SinkDefinition {
  readonly options: Shape;
  readonly create: (options: SinkOptions<Shape>, context: SinkContext) => Sink;
}

/**
 * Defines a sink type. The option types of `create` are inferred from `options`; the result goes into
 * the registry's `SinkDefinition[]` as it is (no cast), and tests call its `create` with typed options.
 */
export function defineSink<Shape extends z.ZodRawShape>(definition: TypedSinkDefinition<Shape>): TypedSinkDefinition<Shape> {
  return Object.freeze(definition);
}
