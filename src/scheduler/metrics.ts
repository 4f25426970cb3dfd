import { Counter, Histogram, type Registry } from 'prom-client';

/** The scheduler's own counters, registered on the bridge's registry (served at /metrics). */
export function createSchedulerMetrics(registry?: Registry) {
  const registers = registry ? [registry] : [];
  return {
    runs: new Counter({
      name: 'sidekick_schedule_runs_total',
      help: 'Scheduled occurrences handled, by outcome (succeeded, failed, skipped, duplicate).',
      labelNames: ['outcome'],
      registers,
    }),
    lag: new Histogram({
      name: 'sidekick_schedule_lag_seconds',
      help: 'How late an occurrence started: start time minus due time.',
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 300],
      registers,
    }),
    errors: new Counter({
      name: 'sidekick_scheduler_errors_total',
      help: 'Scheduler loop failures (database unreachable, schema missing …); the loop retries.',
      registers,
    }),
  };
}

export type SchedulerMetrics = ReturnType<typeof createSchedulerMetrics>;
