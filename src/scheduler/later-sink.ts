import pg from 'pg';
import { z } from 'zod';
import {
  createLink,
  defineSink,
  duration,
  errorMessage,
  FatalError,
  OK,
  payloadText,
  RetriableError,
  type Envelope,
  type ItemOutcome,
  type SendResult,
} from '../sink-kit.js';
import { compileAllowEntry, createAllowList, parseLaterPayload } from './payload.js';

// The later sink lives beside the scheduler, not in sinks/: it is the scheduler's intake, not a
// destination. It writes the scheduler's own table (sidekick.schedules, with the columns the
// executor reads), parses with the scheduler's payload rules and allow-list (shared with `sidekick
// later`), and takes a lock in the scheduler's namespace. Through the kit like every sink, it adds
// the scheduler's own modules, which sinks/ must not import. Registered in sinks/index.ts.

/**
 * `type: later` — pglater as a sink: a notification `"<seconds> <sql>"` schedules that SQL to run
 * after that many seconds (zero or less: now), as the bridge's own database role.
 *
 * ```yaml
 * listen: [pglater]
 * sinks:
 *   later:
 *     type: later
 *     allow: ["^select my_schema\\."]   # optional: refuse any other SQL
 * routes:
 *   - { from: pglater, to: later }
 * ```
 * (or just `scheduler: { pglater: true }`, which sets up exactly this.)
 *
 * Each job is a one-shot row in sidekick.schedules, inserted before the notification counts as
 * delivered, so a restart loses none; the scheduler loop runs them in due order. A payload that is
 * not `<seconds> <sql>`, or SQL the allow-list refuses, fails fatally: logged, counted and
 * dead-lettered, never retried and never the end of the process.
 *
 * Several bridges listening on the same channel all receive every notification; only the one holding
 * the channel's advisory lock schedules it, so a job is scheduled once. The others stand by and take
 * over when that bridge goes away.
 */
export const laterSink = defineSink({
  type: 'later',
  description: 'schedule "<seconds> <sql>" notifications (pglater) as durable one-shot jobs',
  options: {
    /**
     * Regular expressions; when given, SQL must match one of them or it is refused (logged and
     * counted). `/pattern/flags` gives flags. Jobs that pass run with the extended protocol, which
     * refuses a second statement in the string. Default: none (any SQL).
     */
    allow: z
      .array(
        z
          .string()
          .min(1)
          .superRefine((entry, ctx) => {
            try {
              compileAllowEntry(entry);
            } catch (error) {
              ctx.addIssue({ code: 'custom', message: `not a valid regular expression: ${errorMessage(error)}` });
            }
          }),
      )
      .optional(),
    /** Runs per job before it counts as failed (a failed run is retried after retryDelay). Default 1. */
    attempts: z.number().int().min(1).max(1000).default(1),
    /** Wait before running a failed job again. Default 10s. */
    retryDelay: duration.default(10_000),
    /** statement_timeout for each job's SQL. Default: none (the role's setting). */
    statementTimeout: duration.optional(),
    /**
     * A job whose time passed while no scheduler ran: `once` (default) runs it late, `skip` drops it
     * if it is more than scheduler.missedAfter late.
     */
    missed: z.enum(['skip', 'once']).default('once'),
  },
  defaults: { concurrency: 1, batchSize: 100 },
  create(options, context) {
    const { logger } = context;
    const allowed = createAllowList(options.allow);
    const leaderOf = new Set<string>();
    const standbyLogged = new Set<string>();

    async function connect(): Promise<pg.Client> {
      const c = new pg.Client({ ...context.database, application_name: 'pg-sidekick later', keepAlive: true });
      c.on('error', () => {});
      try {
        await c.connect();
        const { rows } = await c.query<{ t: string | null }>(`SELECT to_regclass('sidekick.schedules')::text AS t`);
        if (!rows[0]?.t) {
          throw new FatalError('SCHEMA_MISSING', 'the table sidekick.schedules does not exist in this database: run `sidekick install`');
        }
      } catch (error) {
        await c.end().catch(() => {});
        throw error;
      }
      c.once('end', () => {
        // Session advisory locks went with the connection: leadership must be won again.
        links.retire(c, 'connection ended');
        leaderOf.clear();
      });
      return c;
    }

    // One connection, opened lazily and again after it ends (the kit's reconnect helper).
    const links = createLink<pg.Client>({
      connect,
      close: (c) => c.end(),
      closedError: () => new RetriableError('STOPPED', 'the later sink is stopped', { unavailable: true }),
    });

    /** True when this process schedules the channel's jobs (holds its advisory lock). */
    async function leads(c: pg.Client, channel: string): Promise<boolean> {
      if (leaderOf.has(channel)) return true;
      const { rows } = await c.query<{ ok: boolean }>(`SELECT pg_try_advisory_lock(hashtext('pg-sidekick:later'), hashtext($1)) AS ok`, [channel]);
      if (rows[0]?.ok) {
        leaderOf.add(channel);
        standbyLogged.delete(channel);
        logger.info({ channel }, "scheduling this channel's jobs (other bridges listening on it stand by)");
        return true;
      }
      if (!standbyLogged.has(channel)) {
        standbyLogged.add(channel);
        logger.info({ channel }, "another bridge schedules this channel's jobs; standing by");
      }
      return false;
    }

    function parse(e: Envelope): { ok: true; sql: string; runAt: Date } | { ok: false; error: FatalError } {
      const text = payloadText(e);
      const parsed = parseLaterPayload(text);
      if (!parsed.ok) {
        return {
          ok: false,
          error: new FatalError('LATER_MALFORMED', `malformed ${e.channel} notification ${JSON.stringify(text.slice(0, 200))}: ${parsed.reason}`),
        };
      }
      if (allowed && !allowed(parsed.sql)) {
        return { ok: false, error: new FatalError('LATER_REFUSED', `refused by the allow-list: ${JSON.stringify(parsed.sql.slice(0, 200))}`) };
      }
      const at = Date.parse(e.at);
      const base = Number.isFinite(at) ? at : Date.now();
      return { ok: true, sql: parsed.sql, runAt: new Date(base + Math.max(0, parsed.delaySeconds) * 1000) };
    }

    return {
      name: context.name,
      type: 'later',
      // One INSERT per batch, all or nothing, in order: a busy pglater channel is batched.
      ordered: true,
      async start() {
        await links.get();
      },
      async send(batch, signal): Promise<SendResult> {
        const outcomes: ItemOutcome[] = batch.map(() => OK);
        const jobs: { index: number; sql: string; runAt: Date; channel: string }[] = [];
        batch.forEach((e, index) => {
          const p = parse(e);
          if (!p.ok) outcomes[index] = { ok: false, error: p.error };
          else jobs.push({ index, sql: p.sql, runAt: p.runAt, channel: e.channel });
        });
        if (jobs.length === 0 || signal.aborted) {
          if (signal.aborted) throw new RetriableError('ABORTED', 'stopping');
          return outcomes;
        }
        let c: pg.Client;
        try {
          c = await links.get();
        } catch (error) {
          if (error instanceof FatalError) throw new RetriableError(error.code, error.message, { cause: error, unavailable: true });
          throw new RetriableError('DB_UNAVAILABLE', `cannot connect to the database: ${errorMessage(error)}`, { cause: error, unavailable: true });
        }
        const channels = [...new Set(jobs.map((j) => j.channel))];
        const leading = new Set<string>();
        for (const ch of channels) if (await leads(c, ch)) leading.add(ch);
        const mine = jobs.filter((j) => leading.has(j.channel));
        if (mine.length === 0) return outcomes;
        await c.query(
          `INSERT INTO sidekick.schedules (run_at, sql, origin, single_statement, max_attempts, retry_delay, statement_timeout, missed)
           SELECT r, s, 'later', $3, $4, make_interval(secs => $5), CASE WHEN $6::float8 IS NULL THEN NULL ELSE make_interval(secs => $6::float8) END, $7
             FROM unnest($1::timestamptz[], $2::text[]) AS j(r, s)`,
          [
            mine.map((j) => j.runAt),
            mine.map((j) => j.sql),
            allowed !== undefined,
            options.attempts,
            options.retryDelay / 1000,
            options.statementTimeout === undefined ? null : options.statementTimeout / 1000,
            options.missed,
          ],
        );
        if (logger.isLevelEnabled('debug')) {
          for (const j of mine) logger.debug({ channel: j.channel, runAt: j.runAt.toISOString(), sql: j.sql }, 'job scheduled');
        }
        return outcomes;
      },
      async stop() {
        leaderOf.clear();
        await links.close();
      },
      async check() {
        const c = await links.get();
        const { rows } = await c.query<{ n: string }>(`SELECT count(*)::text AS n FROM sidekick.schedules WHERE origin = 'later'`);
        return `sidekick.schedules reachable (${rows[0]?.n ?? 0} pending job(s))`;
      },
    };
  },
});
