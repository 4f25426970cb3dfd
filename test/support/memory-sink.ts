import type { Envelope } from '../../src/envelope.js';
import { defineSink, OK, type ItemOutcome, type SinkDefinition } from '../../src/sink.js';

/** What a memory sink does with one envelope: OK, or a failure outcome; may wait. */
export type Behaviour = (e: Envelope, attempt: number) => ItemOutcome | Promise<ItemOutcome>;

export interface MemorySink {
  /** Envelopes acknowledged, in the order they were acknowledged. */
  readonly received: Envelope[];
  /** Every attempt, successful or not. */
  readonly attempts: Envelope[];
  behaviour: Behaviour;
}

/**
 * A test-only sink type (`type: memory`) that records what it acknowledges, so integration tests can
 * check delivery, order and duplicates; its behaviour is switchable to fail or stall on purpose.
 * Sinks with the same name share one record, even across two bridges (two "instances").
 */
export function createMemorySinks(): { definition: SinkDefinition; get(name: string): MemorySink } {
  const sinks = new Map<string, MemorySink>();
  const get = (name: string): MemorySink => {
    let sink = sinks.get(name);
    if (!sink) {
      sink = { received: [], attempts: [], behaviour: () => OK };
      sinks.set(name, sink);
    }
    return sink;
  };
  const definition = defineSink({
    type: 'memory',
    description: 'records envelopes in memory (tests)',
    options: {},
    create(_options, context) {
      const record = get(context.name);
      const tries = new Map<string, number>();
      return {
        name: context.name,
        type: 'memory',
        async start() {},
        async send(batch) {
          return Promise.all(
            batch.map(async (e) => {
              const attempt = (tries.get(e.id) ?? 0) + 1;
              tries.set(e.id, attempt);
              record.attempts.push(e);
              const outcome = await record.behaviour(e, attempt);
              if (outcome.ok) record.received.push(e);
              return outcome;
            }),
          );
        },
        async stop() {},
      };
    },
  });
  return { definition, get };
}
