import type { Logger } from 'pino';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { errorMessage } from './errors.js';
import { VERSION } from './version.js';

/**
 * Every counter the bridge keeps, in one registry per bridge (tests run several bridges in one
 * process; a global registry would mix them). Served at /metrics.
 */
export function createMetrics(options: { defaultMetrics?: boolean } = {}) {
  const registry = new Registry();
  if (options.defaultMetrics) {
    collectDefaultMetrics({ register: registry });
    // prom-client's nodejs_active_{handles,requests,resources}_total are gauges with a counter's
    // suffix: `promtool check metrics` rejects the endpoint for them, and a rate() over them is
    // meaningless. The same numbers stay, per type, in nodejs_active_handles / _requests / _resources.
    for (const name of NON_COUNTER_TOTALS) registry.removeSingleMetric(name);
  }
  const registers = [registry];
  // Numbers each dispatcher keeps itself and that are read at scrape time: setting a labelled
  // prom-client series costs about as much as handing an event to a fast sink, per event.
  const sinkCounts = new Set<SinkCounts>();
  const metrics = {
    registry,
    received: new Counter({
      name: 'sidekick_events_received_total',
      help: 'Events picked up from PostgreSQL, per source and channel.',
      labelNames: ['source', 'channel'],
      registers,
    }),
    unrouted: new Counter({ name: 'sidekick_events_unrouted_total', help: 'Events that matched no route.', labelNames: ['channel'], registers }),
    malformed: new Counter({
      name: 'sidekick_events_malformed_total',
      help: 'Notifications or rows that could not be understood (logged, never fatal).',
      labelNames: ['channel'],
      registers,
    }),
    delivered: new Counter({
      name: 'sidekick_events_delivered_total',
      help: 'Events acknowledged by a sink.',
      labelNames: ['sink'],
      registers,
      collect() {
        for (const c of sinkCounts) {
          const total = c.delivered();
          if (total > c.reported) this.inc({ sink: c.sink }, total - c.reported);
          c.reported = total;
        }
      },
    }),
    retried: new Counter({
      name: 'sidekick_events_retried_total',
      help: 'Failed delivery attempts that will be retried.',
      labelNames: ['sink'],
      registers,
    }),
    failed: new Counter({
      name: 'sidekick_delivery_failures_total',
      help: 'Failed delivery attempts, by whether they were retriable.',
      labelNames: ['sink', 'retriable'],
      registers,
    }),
    dead: new Counter({
      name: 'sidekick_events_dead_lettered_total',
      help: 'Events given up on after the retry policy (dead-lettered).',
      labelNames: ['sink'],
      registers,
    }),
    dropped: new Counter({
      name: 'sidekick_events_dropped_total',
      help:
        'Events given up with neither a delivery nor a dead letter (each logged): NOTIFY events refused because the sink queue was full, NOTIFY ' +
        'dead letters with no sidekick schema to hold them, events no store would take.',
      labelNames: ['sink'],
      registers,
    }),
    latency: new Histogram({
      name: 'sidekick_delivery_latency_seconds',
      help: 'From the event (commit or arrival) to the sink acknowledging it.',
      labelNames: ['sink'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    }),
    queued: new Gauge({
      name: 'sidekick_sink_queued',
      help: 'Events waiting or in flight per sink.',
      labelNames: ['sink'],
      registers,
      collect() {
        this.reset();
        for (const c of sinkCounts) this.inc({ sink: c.sink }, c.queued());
      },
    }),
    listenerConnected: new Gauge({ name: 'sidekick_listener_connected', help: '1 while the LISTEN connection is up.', registers }),
    reconnects: new Counter({ name: 'sidekick_listener_reconnects_total', help: 'Times the LISTEN connection was re-established.', registers }),
    buildInfo: new Gauge({
      name: 'sidekick_build_info',
      help: 'Always 1; the labels say which pg-sidekick runs.',
      labelNames: ['version', 'node'],
      registers,
    }),
    outboxConnected: new Gauge({ name: 'sidekick_outbox_connected', help: '1 while the outbox drain is connected to the database.', registers }),
    outboxPartitions: new Gauge({
      name: 'sidekick_outbox_partitions',
      help: 'Key partitions of the outbox this instance drains (of 16, shared by all instances).',
      registers,
    }),
    outboxSpilled: new Counter({
      name: 'sidekick_outbox_spilled_total',
      help: "Events moved to a sink's durable backlog because the sink was slow, failing or holding them long.",
      labelNames: ['sink'],
      registers,
    }),
    storeRefused: new Counter({
      name: 'sidekick_events_store_refused_total',
      help:
        "Events a sink's backlog or the dead letters refused to store as they were; set apart (dead-lettered with the reason, or stored as JSON " +
        'text) so the others go on.',
      labelNames: ['sink'],
      registers,
    }),
    outboxBacklogMode: new Gauge({
      name: 'sidekick_outbox_sink_backlogged',
      help: '1 while a sink is fed from its durable backlog instead of live.',
      labelNames: ['sink'],
      registers,
    }),
    filtered: new Counter({
      name: 'sidekick_events_filtered_total',
      help:
        'Events a route left out, per route (its name or index): its filter said false or could not be evaluated, or its transform gave ' +
        'null/undefined.',
      labelNames: ['route'],
      registers,
    }),
    filterErrors: new Counter({
      name: 'sidekick_filter_errors_total',
      help: "Events a route's filter could not evaluate (a missing field in arithmetic, a non-boolean result): left out, counted here too.",
      labelNames: ['route'],
      registers,
    }),
    transformFailures: new Counter({
      name: 'sidekick_transform_failures_total',
      help: "Events whose route's transform threw (or whose transform module could not be loaded): dead-lettered for that route's sinks.",
      labelNames: ['route'],
      registers,
    }),
    sampleErrors: new Counter({
      name: 'sidekick_metric_read_errors_total',
      help: 'Scrape-time reads that failed (database unreachable or too slow); that sample is left out or NaN.',
      labelNames: ['metric'],
      registers,
    }),
  };
  metrics.buildInfo.set({ version: VERSION, node: process.versions.node }, 1);
  /**
   * Creates every per-sink series at 0. A labelled series exists only from its first increment, so
   * without this `increase(sidekick_events_dead_lettered_total[15m]) > 0` never sees a sink's first
   * dead letter (the series appears at 1, no increase) and absent series look like a broken scrape.
   */
  const initSink = (sink: string): void => {
    for (const counter of [metrics.delivered, metrics.retried, metrics.dead, metrics.dropped, metrics.outboxSpilled, metrics.storeRefused]) {
      counter.inc({ sink }, 0);
    }
    for (const retriable of ['true', 'false']) metrics.failed.inc({ sink, retriable }, 0);
    metrics.latency.zero({ sink });
    metrics.outboxBacklogMode.set({ sink }, 0);
  };
  /** Creates a shaping route's series at 0 (a route with a filter or a transform), for the same reason as initSink. */
  const initRoute = (route: string): void => {
    for (const counter of [metrics.filtered, metrics.filterErrors, metrics.transformFailures]) counter.inc({ route }, 0);
  };
  return {
    ...metrics,
    initSink,
    initRoute,
    /**
     * A dispatcher's own counts for `sink`, read at each scrape (sidekick_sink_queued,
     * sidekick_events_delivered_total); every per-sink series of the sink starts at 0 here.
     */
    watchSink(sink: string, counts: { queued: () => number; delivered: () => number }): void {
      initSink(sink);
      sinkCounts.add({ sink, ...counts, reported: 0 });
    },
  };
}

/** Default metrics whose names end in _total but are gauges (see createMetrics). */
const NON_COUNTER_TOTALS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

interface SinkCounts {
  readonly sink: string;
  readonly queued: () => number;
  readonly delivered: () => number;
  /** How much of `delivered` the counter has been given already. */
  reported: number;
}

/**
 * A gauge whose values are read when /metrics is scraped (a database query, say) instead of being
 * kept up to date. `read` calls `set` for each sample. A read that fails or times out never fails the
 * scrape: the gauge is left without samples (NaN when it has no labels), the failure is counted in
 * sidekick_metric_read_errors_total and logged once a minute at most.
 */
export function createSampledGauge<L extends string = never>(
  metrics: Metrics,
  config: { name: string; help: string; labelNames?: readonly L[] },
  read: (set: (value: number, labels?: Partial<Record<L, string>>) => void) => Promise<void>,
  logger?: Logger,
): Gauge<L> {
  let lastLogged = 0;
  const name = config.name;
  return new Gauge<L>({
    name,
    help: config.help,
    labelNames: config.labelNames ?? [],
    registers: [metrics.registry],
    async collect() {
      const samples: [number, Partial<Record<L, string>> | undefined][] = [];
      try {
        await read((value, labels) => {
          samples.push([value, labels]);
        });
      } catch (error) {
        metrics.sampleErrors.inc({ metric: name });
        if (Date.now() - lastLogged > 60_000) {
          lastLogged = Date.now();
          logger?.warn({ metric: name, err: errorMessage(error) }, 'cannot read a metric for /metrics; leaving it out');
        }
        this.reset();
        if ((config.labelNames ?? []).length === 0) this.set(Number.NaN);
        return;
      }
      this.reset();
      for (const [value, labels] of samples) {
        if (labels) this.set(labels as never, value);
        else this.set(value);
      }
    },
  });
}

export type Metrics = ReturnType<typeof createMetrics>;
