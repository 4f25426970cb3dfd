import type { Logger } from 'pino';
import type { Delivery, DeliveryReceiver, Dispatcher } from './dispatcher/index.js';
import type { Envelope } from './envelope.js';
import type { Metrics } from './metrics.js';
import type { Router } from './router.js';

export interface Routed {
  readonly sink: string;
  readonly delivery: Promise<Delivery>;
}

/**
 * Where every source's events meet their routes and sinks: source → pipeline → dispatchers. A source
 * that keeps a record of each event (the outbox) routes and hands over events itself through route()
 * and deliver(); one that keeps none (NOTIFY) uses publish().
 */
export interface Pipeline {
  /**
   * The sinks an event is routed to. None: counted (sidekick_events_unrouted_total) and said once per
   * channel, here for every source.
   */
  route(envelope: Envelope): readonly string[];
  /**
   * Hands an event to one sink's dispatcher; `receiver` hears how it ended. `durable`: the source
   * keeps the event until then, so the sink's queue limit (for ephemeral events) does not apply.
   */
  deliver(sink: string, envelope: Envelope, receiver: DeliveryReceiver, durable?: boolean): void;
  /** route() and deliver() to each sink; a promise per sink of how it ended. */
  publish(envelope: Envelope): readonly Routed[];
  readonly dispatchers: ReadonlyMap<string, Dispatcher>;
}

const DURABLE = Object.freeze({ force: true });

export function createPipeline(params: {
  router: Router;
  dispatchers: ReadonlyMap<string, Dispatcher>;
  logger: Logger;
  metrics?: Metrics;
}): Pipeline {
  const { router, dispatchers, metrics, logger } = params;
  const warned = new Set<string>();
  function route(envelope: Envelope): readonly string[] {
    const sinks = router.route(envelope);
    if (sinks.length === 0) {
      metrics?.unrouted.inc({ channel: envelope.channel });
      if (!warned.has(envelope.channel) && warned.size < 1000) {
        warned.add(envelope.channel);
        logger.warn({ channel: envelope.channel, source: envelope.source }, 'no route matches this channel; its events are not delivered anywhere');
      }
    }
    return sinks;
  }
  function deliver(sink: string, envelope: Envelope, receiver: DeliveryReceiver, durable = false): void {
    (dispatchers.get(sink) as Dispatcher).deliverTo(envelope, receiver, durable ? DURABLE : undefined);
  }
  return {
    dispatchers,
    route,
    deliver,
    publish(envelope) {
      return route(envelope).map((sink) => ({
        sink,
        delivery: new Promise<Delivery>((resolve) => deliver(sink, envelope, { delivered: resolve })),
      }));
    },
  };
}
