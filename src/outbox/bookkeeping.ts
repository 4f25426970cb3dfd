import type pg from 'pg';
import type { Logger } from 'pino';
import type { Envelope } from '../envelope.js';
import { errorMessage } from '../errors.js';
import type { Metrics } from '../metrics.js';
import type { Batch, DeadLetter, Spill } from './ledger.js';
import { eventRecord, FLUSH, storableText } from './queries.js';

/**
 * Writes a ledger batch (src/outbox/ledger.ts): backlog copies, dead letters and the rows every sink
 * is done with, in one statement (atomic, one round trip; the drain's connection runs with
 * synchronous_commit off: a lost acknowledgement only means a redelivery). Returns the backlog seq of
 * each spill, by index; undefined where the backlog refused it.
 *
 * One event a store refuses must not hold up all the others: when the statement fails on its data
 * (not the connection), the batch is written one event at a time. A checkpoint copy the backlog
 * refuses is not needed (its event stays live, and its entry is kept); any other spill the backlog
 * refuses (its event is nowhere else) becomes a dead letter saying why; a dead letter refused as it
 * is is stored with its images as JSON text (lossless); only if that fails too is the event logged
 * whole and counted as dropped. Throws only for the connection or the server.
 */
export async function writeBatch(
  c: pg.Client,
  batch: Batch,
  context: { logger: Logger; metrics?: Metrics | undefined },
): Promise<(number | undefined)[]> {
  try {
    const rows = await write(c, batch.spills, batch.dead, batch.doneBacklog, batch.doneEntries);
    return seqs(batch.spills, rows);
  } catch (error) {
    if (!isDataError(error)) throw error;
    return writeOneByOne(c, batch, error, context);
  }
}

/** A backlog row FLUSH wrote: which (sink, event) got which seq. */
interface Stored {
  readonly seq: string;
  readonly sink: string;
  readonly event_uid: string;
}

const MAX_ERROR_TEXT = 2000;

/**
 * A statement that failed on what it was given (SQLSTATE classes 22 data exception, 23 integrity,
 * 54 program limit), not on the connection or the server: the client is still usable.
 */
export function isDataError(error: unknown): boolean {
  const code = (error as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' && /^(22|23|54)/.test(code);
}

async function write(
  c: pg.Client,
  spills: readonly Spill[],
  dead: readonly DeadLetter[],
  doneBacklog: readonly number[],
  doneEntries: readonly number[],
): Promise<readonly Stored[]> {
  const result = await c.query<Stored>(FLUSH, [
    JSON.stringify(spills.map((s, ord) => ({ sink: s.sink, part: s.part, ord, ...eventRecord(s.envelope) }))),
    JSON.stringify(
      dead.map((d) => ({ sink: d.sink, attempts: d.attempts, error_code: d.code, error: storableText(d.error), ...eventRecord(d.envelope) })),
    ),
    doneBacklog,
    doneEntries,
  ]);
  return result.rows;
}

function seqs(spills: readonly Spill[], rows: readonly Stored[]): (number | undefined)[] {
  const seqOf = new Map(rows.map((r) => [`${r.sink}\u0000${r.event_uid}`, Number(r.seq)]));
  return spills.map((s) => seqOf.get(`${s.sink}\u0000${s.envelope.id}`));
}

async function writeOneByOne(
  c: pg.Client,
  batch: Batch,
  cause: unknown,
  { logger, metrics }: { logger: Logger; metrics?: Metrics | undefined },
): Promise<(number | undefined)[]> {
  logger.warn({ err: errorMessage(cause) }, "the drain's bookkeeping refused some event; writing them one by one to set it apart");
  const refused = (sink: string, envelope: Envelope, store: string, error: unknown) => {
    metrics?.storeRefused.inc({ sink });
    logger.error({ sink, id: envelope.id, channel: envelope.channel, err: errorMessage(error) }, `event refused by ${store}; set apart`);
  };
  const stored: (number | undefined)[] = [];
  const dead = [...batch.dead];
  /** Entries of refused checkpoint copies: their event is live, so they stay. */
  const keep = new Set<number>();
  for (const s of batch.spills) {
    try {
      stored.push(seqs([s], await write(c, [s], [], [], []))[0]);
    } catch (error) {
      if (!isDataError(error)) throw error;
      stored.push(undefined);
      refused(s.sink, s.envelope, "the sink's backlog (sidekick.deliveries)", error);
      if (s.job) {
        keep.add(s.entry as number);
        continue;
      }
      dead.push({
        sink: s.sink,
        envelope: s.envelope,
        attempts: 0,
        code: 'STORE_REFUSED',
        error: `could not be stored in the sink's backlog: ${errorMessage(error)}`.slice(0, MAX_ERROR_TEXT),
      });
    }
  }
  for (const d of dead) {
    try {
      await write(c, [], [d], [], []);
    } catch (error) {
      if (!isDataError(error)) throw error;
      refused(d.sink, d.envelope, 'sidekick.dead_letters', error);
      try {
        await write(
          c,
          [],
          [
            {
              ...d,
              envelope: asText(d.envelope),
              code: 'STORE_REFUSED',
              error: `${d.error} — stored with its images as JSON text: ${errorMessage(error)}`.slice(0, MAX_ERROR_TEXT),
            },
          ],
          [],
          [],
        );
      } catch (again) {
        if (!isDataError(again)) throw again;
        metrics?.dropped.inc({ sink: d.sink });
        logger.error(
          { sink: d.sink, id: d.envelope.id, event: d.envelope, err: errorMessage(again) },
          'event could not be stored as a dead letter at all; it is dropped (logged here whole)',
        );
      }
    }
  }
  await write(
    c,
    [],
    [],
    batch.doneBacklog,
    batch.doneEntries.filter((id) => !keep.has(id)),
  );
  return stored;
}

/** An event whose images and payload are replaced by their JSON text (a JSON string): storable anywhere JSON is. */
function asText(e: Envelope): Envelope {
  const text = (v: unknown) => (v === undefined || v === null ? v : JSON.stringify(v));
  return {
    ...e,
    ...(e.new != null ? { new: text(e.new) as never } : {}),
    ...(e.old != null ? { old: text(e.old) as never } : {}),
    ...(e.payload !== undefined ? { payload: text(e.payload) } : {}),
  };
}
