import type { Logger } from 'pino';
import type { Delivery, DeliveryReceiver, Dispatcher } from './dispatcher/index.js';
import { type Envelope, shapedBody } from './envelope.js';
import { errorMessage, FatalError, SidekickError } from './errors.js';
import type { Metrics } from './metrics.js';
import type { CompiledRule, Router } from './router.js';
import { createLimiter, createOrderedHandoff, type Failed, type OrderedHandoff } from './shape/handoff.js';
import { type CompiledTransform, compileJsonata, loadModuleTransform, TRANSFORM_FAILED } from './shape/transform.js';

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
   * The sinks an event is routed to (routes' filters applied). None: counted
   * (sidekick_events_unrouted_total) and said once per channel, here for every source.
   */
  route(envelope: Envelope): readonly string[];
  /**
   * Hands an event to one sink's dispatcher; `receiver` hears how it ended. `durable`: the source
   * keeps the event until then, so the sink's queue limit (for ephemeral events) does not apply. When
   * a route to this sink has a transform, the sink gets the shaped copy (once per distinct transform
   * of the routes that matched, and the plain envelope once if one of them has none); `receiver`
   * hears once, the worst of those outcomes. A transform that gives null drops the copy (delivered,
   * nothing sent); one that throws dead-letters the event (FatalError TRANSFORM_FAILED).
   */
  deliver(sink: string, envelope: Envelope, receiver: DeliveryReceiver, durable?: boolean): void;
  /** route() and deliver() to each sink; a promise per sink of how it ended. */
  publish(envelope: Envelope): readonly Routed[];
  readonly dispatchers: ReadonlyMap<string, Dispatcher>;
  /** Settles when every transform module is loaded; rejects with the first that cannot be. */
  readonly ready: Promise<void>;
}

/** Transforms of one sink running at once. */
const TRANSFORMS_AT_ONCE = 16;
const DURABLE = Object.freeze({ force: true });
/** A copy the transform dropped (null/undefined), or an event no route to the sink matches any more: settled, nothing sent. */
const LEFT_OUT: Delivery = Object.freeze({ status: 'delivered', attempts: 0 });
const DROP = Symbol('drop');
type Shaped = Envelope | typeof DROP;

export function createPipeline(params: {
  router: Router;
  dispatchers: ReadonlyMap<string, Dispatcher>;
  logger: Logger;
  metrics?: Metrics;
}): Pipeline {
  const { router, dispatchers, metrics, logger } = params;
  const warned = new Set<string>();
  const shaping = router.rules.filter((r) => r.transform !== undefined || r.filter !== undefined);
  for (const rule of shaping) metrics?.initRoute(rule.label);
  // Logged once per route (then counted only): a filter that fails for one event fails for thousands.
  const filterLogged = new Set<number>();
  const transformLogged = new Map<number, number>();
  router.onFiltered((rule, envelope, error) => {
    metrics?.filtered.inc({ route: rule.label });
    if (error === undefined) return;
    metrics?.filterErrors.inc({ route: rule.label });
    if (filterLogged.has(rule.index)) return;
    filterLogged.add(rule.index);
    logger.warn(
      { route: rule.label, id: envelope.id, channel: envelope.channel, err: error.message },
      'a route filter could not be evaluated for an event, which does not match (logged once per route; counted in sidekick_filter_errors_total)',
    );
  });

  function route(envelope: Envelope): readonly string[] {
    const sinks = router.route(envelope);
    // A route for the channel whose filter left the event out: counted as filtered, not as unrouted.
    if (sinks.length === 0 && !router.hasRoute(envelope.channel)) {
      metrics?.unrouted.inc({ channel: envelope.channel });
      if (!warned.has(envelope.channel) && warned.size < 1000) {
        warned.add(envelope.channel);
        logger.warn({ channel: envelope.channel, source: envelope.source }, 'no route matches this channel; its events are not delivered anywhere');
      }
    }
    return sinks;
  }

  // ---- transforms ------------------------------------------------------------------------------
  const transforms = new Map<number, CompiledTransform>();
  const loads: Promise<void>[] = [];
  for (const rule of router.rules) {
    if (rule.transform === undefined || rule.shape !== rule.index) continue;
    if (typeof rule.transform === 'string') {
      transforms.set(rule.index, compileJsonata(rule.transform));
    } else {
      const loaded = loadModuleTransform(rule.transform.module);
      transforms.set(rule.index, loaded.transform);
      loads.push(
        loaded.loaded.catch((error: unknown) => {
          logger.error({ route: rule.label, err: errorMessage(error) }, 'cannot load a transform module');
          throw error;
        }),
      );
    }
  }
  const ready = Promise.all(loads).then(() => undefined);
  ready.catch(() => {});
  /** Per sink: its shaped copies go out in the order they were handed over (a key's order holds). */
  const handoffs = new Map<string, OrderedHandoff<Shaped>>();
  /** Per sink: its transforms, a few at a time (see createLimiter). */
  const limiters = new Map<string, ReturnType<typeof createLimiter>>();

  async function shape(rule: CompiledRule, envelope: Envelope): Promise<Shaped> {
    const value = await (transforms.get(rule.shape) as CompiledTransform)(envelope);
    if (value === undefined) return DROP;
    try {
      return { ...envelope, body: shapedBody(value) };
    } catch (error) {
      throw new FatalError(TRANSFORM_FAILED, `transform of route ${rule.label} gave a value that cannot be sent: ${errorMessage(error)}`);
    }
  }

  function transformFailed(rule: CompiledRule, sink: string, envelope: Envelope, error: SidekickError): void {
    metrics?.transformFailures.inc({ route: rule.label });
    metrics?.dead.inc({ sink });
    const now = Date.now();
    if (now - (transformLogged.get(rule.index) ?? -Infinity) < 60_000) return;
    transformLogged.set(rule.index, now);
    logger.error(
      { route: rule.label, sink, id: envelope.id, channel: envelope.channel, code: error.code, err: error.message },
      'transform failed; the event is dead-lettered for this sink (logged at most once a minute per route)',
    );
  }

  /** The slow path: a route to this sink has a transform. */
  function deliverShaped(sink: string, envelope: Envelope, rules: readonly CompiledRule[], receiver: DeliveryReceiver, durable: boolean): void {
    const dispatcher = dispatchers.get(sink) as Dispatcher;
    const options = durable ? DURABLE : undefined;
    let plain = false;
    const shapes: CompiledRule[] = [];
    for (const rule of rules) {
      if (rule.transform === undefined) plain = true;
      else if (!shapes.some((s) => s.shape === rule.shape)) shapes.push(rule);
    }
    const copies = shapes.length + (plain ? 1 : 0);
    if (copies === 0) {
      receiver.delivered(LEFT_OUT);
      return;
    }
    const heard = copies === 1 ? receiver : fanIn(copies, receiver);
    let handoff = handoffs.get(sink);
    let limit = limiters.get(sink);
    if (handoff === undefined || limit === undefined) {
      handoff = createOrderedHandoff<Shaped>();
      handoffs.set(sink, handoff);
      limit = createLimiter(TRANSFORMS_AT_ONCE);
      limiters.set(sink, limit);
    }
    if (plain) handoff.push(envelope, () => dispatcher.deliverTo(envelope, heard, options));
    for (const rule of shapes) {
      handoff.push(
        limit(() => shape(rule, envelope)),
        (result) => {
          if (result === DROP) {
            metrics?.filtered.inc({ route: rule.label });
            heard.delivered(LEFT_OUT);
          } else if ('failed' in result) {
            const failed = (result as Failed).failed;
            const error =
              failed instanceof SidekickError
                ? failed
                : new FatalError(TRANSFORM_FAILED, `transform failed: ${errorMessage(failed)}`, { cause: failed });
            transformFailed(rule, sink, envelope, error);
            heard.delivered({ status: 'dead', attempts: 1, error });
          } else {
            dispatcher.deliverTo(result, heard, options);
          }
        },
      );
    }
  }

  function deliver(sink: string, envelope: Envelope, receiver: DeliveryReceiver, durable = false): void {
    // Without transforms (or for a sink no transforming route reaches) this is all there is: no closure, no copy.
    const rules = router.transforms ? router.rulesFor(envelope, sink) : undefined;
    if (rules === undefined) {
      (dispatchers.get(sink) as Dispatcher).deliverTo(envelope, receiver, durable ? DURABLE : undefined);
      return;
    }
    deliverShaped(sink, envelope, rules, receiver, durable);
  }

  return {
    dispatchers,
    ready,
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

/**
 * A receiver for one event's several copies to one sink: it hears once, when all have ended, the
 * worst outcome (aborted: the source keeps the event and all copies go again; then dead; dropped).
 */
function fanIn(copies: number, receiver: DeliveryReceiver): DeliveryReceiver {
  let left = copies;
  let worst: Delivery | undefined;
  const rank = { delivered: 0, dropped: 1, dead: 2, aborted: 3 } as const;
  return {
    delivered(d) {
      if (worst === undefined || rank[d.status] > rank[worst.status]) worst = d;
      if (--left === 0) receiver.delivered(worst);
    },
  };
}
