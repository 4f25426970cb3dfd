import { z } from 'zod';
import { duration } from '../duration.js';

/** `scheduler.pglater`: the pglater channel shorthand (a `later` sink fed by LISTEN on a channel). */
export const pglaterShorthand = z.union([
  z.boolean(),
  z.strictObject({
    /** The channel pglater's notifications arrive on. Default "pglater". */
    channel: z.string().min(1).max(63).default('pglater'),
    /** The generated sink's name (what routes and metrics call it). Default "pglater". */
    sink: z
      .string()
      .regex(/^[A-Za-z0-9_.-]+$/)
      .default('pglater'),
    /**
     * Regular expressions; when given, only SQL matching one of them is scheduled (the rest is
     * refused, logged and counted). `/pattern/flags` gives flags, e.g. "/^select my_schema\\./i".
     * Default: none (any SQL).
     */
    allow: z.array(z.string().min(1)).optional(),
  }),
]);

/**
 * The `scheduler:` section. The scheduler runs what is due in `sidekick.schedules` (which
 * `sidekick install` creates): schedules added with `sidekick schedule add` or plain SQL, pgcron-style
 * `scheduled_events`, and jobs the `later` sink received.
 */
export const schedulerSchema = z.strictObject({
  /**
   * Run the scheduler loop in this bridge. Default: true when this section is present or a `later`
   * sink is configured, else false (a bridge without it does not need the scheduler tables).
   */
  enabled: z.boolean().optional(),
  /**
   * Shorthand for "LISTEN pglater, schedule what arrives": `pglater: true` adds the channel to
   * `listen`, a `later` sink named "pglater" and the route between them. Default: off.
   */
  pglater: pglaterShorthand.default(false),
  /**
   * Longest sleep between two looks at the schedules table. The loop sleeps until the nearest due
   * time, and a NOTIFY on every change wakes it early; this is the safety net. Default 1s.
   */
  pollInterval: duration.default(1_000).refine((v) => v >= 10, 'at least 10ms'),
  /** Database connections running due work at once. Default 2. */
  concurrency: z.number().int().min(1).max(64).default(2),
  /**
   * Occurrences claimed per transaction. Each runs under its own savepoint; more than 64 writing
   * ones in one transaction overflow PostgreSQL's subtransaction cache. Default 50.
   */
  batchSize: z.number().int().min(1).max(1000).default(50),
  /**
   * An occurrence that could not start within this long after its due time counts as missed (its
   * schedule's missed-run policy decides whether it still runs). Default 60s.
   */
  missedAfter: duration.default(60_000),
  history: z
    .strictObject({
      /** How long run history (sidekick.schedule_runs) is kept. Default 7d. */
      retention: duration.default(7 * 24 * 3_600_000),
    })
    .prefault({}),
});

export type SchedulerSection = z.infer<typeof schedulerSchema>;

/** The scheduler settings the bridge uses, with `enabled` decided. */
export interface SchedulerConfig {
  readonly enabled: boolean;
  readonly pollInterval: number;
  readonly concurrency: number;
  readonly batchSize: number;
  readonly missedAfter: number;
  readonly history: { readonly retention: number };
}

/**
 * Expands `scheduler.pglater` into plain config before validation: the channel joins `listen`, a
 * `later` sink is added and a route connects them. Returns problems instead of throwing, so they are
 * reported with the other config errors.
 */
export function expandPglater(doc: Record<string, unknown>): { doc: Record<string, unknown>; problems: string[] } {
  const section = doc.scheduler;
  if (section === null || typeof section !== 'object') return { doc, problems: [] };
  const parsed = pglaterShorthand.default(false).safeParse((section as Record<string, unknown>).pglater);
  if (!parsed.success || parsed.data === false) return { doc, problems: [] };
  const options = parsed.data === true ? { channel: 'pglater', sink: 'pglater' } : parsed.data;
  const sinks = (doc.sinks && typeof doc.sinks === 'object' ? doc.sinks : {}) as Record<string, unknown>;
  if (Object.hasOwn(sinks, options.sink)) {
    return { doc, problems: [`scheduler.pglater: a sink named "${options.sink}" already exists (set scheduler.pglater.sink to another name)`] };
  }
  const listen = Array.isArray(doc.listen) ? doc.listen : [];
  const routes = Array.isArray(doc.routes) ? doc.routes : [];
  return {
    doc: {
      ...doc,
      listen: listen.includes(options.channel) ? listen : [...listen, options.channel],
      sinks: { ...sinks, [options.sink]: { type: 'later', ...('allow' in options && options.allow ? { allow: options.allow } : {}) } },
      routes: [...routes, { from: options.channel, to: options.sink }],
    },
    problems: [],
  };
}

export function resolveScheduler(section: SchedulerSection | undefined, hasLaterSink: boolean): SchedulerConfig {
  const s = section ?? schedulerSchema.parse({});
  return {
    enabled: s.enabled ?? (section !== undefined || hasLaterSink),
    pollInterval: s.pollInterval,
    concurrency: s.concurrency,
    batchSize: s.batchSize,
    missedAfter: s.missedAfter,
    history: { retention: s.history.retention },
  };
}
