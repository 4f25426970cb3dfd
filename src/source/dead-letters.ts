import pg from 'pg';
import type { Logger } from 'pino';
import type { Envelope } from '../envelope.js';
import { errorMessage, type SidekickError } from '../errors.js';
import type { Metrics } from '../metrics.js';
import { eventRecord, storableText } from '../outbox/queries.js';

/**
 * Dead letters of the ephemeral (NOTIFY) path, stored in sidekick.dead_letters when the schema is
 * installed, so `sidekick dlq list / retry` work for them as for durable events. A NOTIFY event
 * exists only in this process: when there is nowhere to store it (no schema, a schema older than
 * this version, a store that refuses it, too many waiting while the database is down), it is said
 * truthfully that it is dropped — logged whole and counted in sidekick_events_dropped_total.
 */
export interface DeadLetterStore {
  add(sink: string, envelope: Envelope, attempts: number, error: SidekickError): void;
  /** Writes what is waiting (one try), then disconnects. Idempotent. */
  close(): Promise<void>;
}

/** Waiting dead letters held at most while the database cannot take them. */
const MAX_WAITING = 10_000;
/** How long the writes are gathered before one statement stores them. */
const GATHER_MS = 50;
/** How often a write is tried again while the database is down. */
const RETRY_MS = 1_000;
const MAX_ERROR_TEXT = 2000;

const INSERT = `
INSERT INTO sidekick.dead_letters (sink, event_id, event_uid, attempts, error_code, error,
  xid, at, source, channel, op, schema_name, table_name, key, new, old, payload)
SELECT d.sink, d.event_id, d.event_uid, d.attempts, d.error_code, d.error, d.xid::xid8, d.at, d.source, d.channel, d.op, d.schema_name, d.table_name, d.key,
       d.new::json, d.old::json, d.payload::json
FROM json_to_recordset($1::json) AS d(sink text, attempts int, error_code text, error text, event_id bigint, event_uid text, xid text,
  at timestamptz, source text, channel text, op text, schema_name text, table_name text, key text, new text, old text, payload text)`;

interface Letter {
  readonly sink: string;
  readonly envelope: Envelope;
  readonly record: Record<string, unknown>;
}

export function createDeadLetterStore(params: { connection: pg.ClientConfig; logger: Logger; metrics?: Metrics }): DeadLetterStore {
  const { metrics } = params;
  const logger = params.logger.child({ store: 'dead-letters' });
  let waiting: Letter[] = [];
  let timer: NodeJS.Timeout | undefined;
  let writing: Promise<void> | undefined;
  let client: pg.Client | undefined;
  /** undefined: not known yet; false: no (current) schema here — every dead letter is dropped. */
  let installed: boolean | undefined;
  let closed = false;

  function drop(letter: Letter, why: string): void {
    metrics?.dropped.inc({ sink: letter.sink });
    logger.error(
      { sink: letter.sink, id: letter.envelope.id, channel: letter.envelope.channel, event: letter.envelope, why },
      'NOTIFY event failed for good and is dropped, not dead-lettered (logged here whole)',
    );
  }

  async function connect(): Promise<pg.Client> {
    if (client) return client;
    const c = new pg.Client({ ...params.connection, application_name: 'pg-sidekick dead letters' });
    c.on('error', (error) => logger.debug({ err: error.message }, 'dead-letter connection error'));
    try {
      await c.connect();
      const { rows } = await c.query<{ ok: boolean }>(`SELECT to_regclass('sidekick.installation') IS NOT NULL AS ok`);
      installed = rows[0]?.ok === true;
    } catch (error) {
      await c.end().catch(() => {});
      throw error;
    }
    client = c;
    return c;
  }

  async function write(): Promise<void> {
    const batch = waiting;
    waiting = [];
    if (batch.length === 0) return;
    let c: pg.Client;
    try {
      c = await connect();
    } catch (error) {
      return retry(batch, error);
    }
    if (!installed) {
      for (const letter of batch)
        drop(
          letter,
          'the sidekick schema is not installed here (or older than this pg-sidekick): run `sidekick install` to keep NOTIFY dead letters',
        );
      return;
    }
    try {
      await c.query(INSERT, [JSON.stringify(batch.map((l) => l.record))]);
      logger.info({ count: batch.length }, 'NOTIFY events written to sidekick.dead_letters');
    } catch (error) {
      if (!/^(22|23|54)/.test(String((error as { code?: unknown }).code ?? ''))) {
        client = undefined;
        await c.end().catch(() => {});
        return retry(batch, error);
      }
      // One letter the table refuses must not take the others with it: one by one.
      for (const letter of batch) {
        try {
          await c.query(INSERT, [JSON.stringify([letter.record])]);
        } catch (one) {
          metrics?.storeRefused.inc({ sink: letter.sink });
          drop(letter, `sidekick.dead_letters refused it: ${errorMessage(one)}`);
        }
      }
    }
  }

  function retry(batch: Letter[], error: unknown): void {
    if (closed) {
      for (const letter of batch) drop(letter, `the database is unreachable at shutdown: ${errorMessage(error)}`);
      return;
    }
    logger.warn({ count: batch.length, err: errorMessage(error), retryInMs: RETRY_MS }, 'cannot store NOTIFY dead letters yet; retrying');
    waiting = batch.concat(waiting);
    while (waiting.length > MAX_WAITING) drop(waiting.shift() as Letter, `more than ${MAX_WAITING} dead letters waiting for the database`);
    schedule(RETRY_MS);
  }

  function schedule(ms: number): void {
    if (timer || closed) return;
    timer = setTimeout(() => {
      timer = undefined;
      writing = (writing ?? Promise.resolve()).then(write).catch((error) => logger.error({ err: errorMessage(error) }, 'dead-letter write failed'));
    }, ms);
    timer.unref();
  }

  let closing: Promise<void> | undefined;
  return {
    add(sink, envelope, attempts, error) {
      const record = {
        sink,
        attempts,
        error_code: error.code,
        error: storableText(errorMessage(error)).slice(0, MAX_ERROR_TEXT),
        ...eventRecord(envelope),
      };
      const letter: Letter = { sink, envelope, record };
      if (installed === false)
        return drop(
          letter,
          'the sidekick schema is not installed here (or older than this pg-sidekick): run `sidekick install` to keep NOTIFY dead letters',
        );
      if (closed) return drop(letter, 'the bridge has stopped');
      waiting.push(letter);
      while (waiting.length > MAX_WAITING) drop(waiting.shift() as Letter, `more than ${MAX_WAITING} dead letters waiting for the database`);
      schedule(GATHER_MS);
    },
    close() {
      closing ??= (async () => {
        if (timer) clearTimeout(timer);
        timer = undefined;
        closed = true;
        await writing?.catch(() => {});
        await write().catch((error) => logger.error({ err: errorMessage(error) }, 'dead-letter write failed'));
        const c = client;
        client = undefined;
        await c?.end().catch(() => {});
      })();
      return closing;
    },
  };
}
