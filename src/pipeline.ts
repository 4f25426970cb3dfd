import type { Logger } from 'pino';
import type { Delivery, Dispatcher } from './dispatcher.js';
import type { Envelope } from './envelope.js';
import type { Metrics } from './metrics.js';
import type { Router } from './router.js';

export interface Routed {
  readonly sink: string;
  readonly delivery: Promise<Delivery>;
}

export interface Pipeline {
  /** Routes an envelope and hands it to each matching sink's dispatcher. */
  publish(envelope: Envelope, options?: { force?: boolean }): readonly Routed[];
  readonly dispatchers: ReadonlyMap<string, Dispatcher>;
}

/** router → dispatchers: the one place where an event meets its sinks. */
export function createPipeline(params: {
  router: Router;
  dispatchers: ReadonlyMap<string, Dispatcher>;
  logger: Logger;
  metrics?: Metrics;
}): Pipeline {
  const { router, dispatchers, metrics, logger } = params;
  const warned = new Set<string>();
  return {
    dispatchers,
    publish(envelope, options) {
      const sinks = router.route(envelope);
      if (sinks.length === 0) {
        metrics?.unrouted.inc({ channel: envelope.channel });
        if (!warned.has(envelope.channel) && warned.size < 1000) {
          warned.add(envelope.channel);
          logger.warn({ channel: envelope.channel }, 'no route matches this channel; its events are not delivered anywhere');
        }
        return [];
      }
      return sinks.map((sink) => ({ sink, delivery: (dispatchers.get(sink) as Dispatcher).deliver(envelope, options) }));
    },
  };
}
