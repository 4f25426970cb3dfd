import pg from 'pg';
import type { Logger } from 'pino';
import type { OutboxOptions } from '../config.js';
import { sleep, type Delivery, type Dispatcher } from '../dispatcher.js';
import type { Envelope } from '../envelope.js';
import { errorMessage } from '../errors.js';
import type { Metrics } from '../metrics.js';
import { settleBy } from '../deadline.js';
import { clientSocket, createListener, reconnectDelay, RECONNECT_MAX_MS, type Listener } from '../pg/listener.js';
import {
  ARM_WAKEUP, BACKLOG_SINKS, FETCH_BACKLOG, FETCH_OUTBOX, FLUSH, FRESH_XID, INSTALLATION, LAST_VALUE, LOCK_CLASS, MEMBER_BASE, MEMBER_SLOTS, PARTITIONS,
  WAKE_CHANNEL, eventRecord, outboxEvents, rowEnvelope, storableText, type BacklogRow, type OutboxRow,
} from '../outbox/queries.js';
import { createScanBound } from '../outbox/scan-bound.js';
import type { Heartbeat } from '../readiness.js';
import type { Router } from '../router.js';
import { isFolded, listMigrations, migrate, PreFoldSchema } from '../sql/migrate.js';

/**
 * The durable source: drains sidekick.outbox into the sinks' dispatchers.
 *
 * Design (docs/outbox.md has the user-facing version):
 * - The outbox is consumed as a queue (read, deliver, delete), never through a "last id" cursor;
 *   a scan bound that is provably safe keeps scans off the dead rows (src/outbox/scan-bound.ts).
 * - Events are spread over 16 key partitions. Each instance owns some of them under session advisory
 *   locks (a fair share of the live instances), so one key is only ever drained by one instance, in
 *   id order, which is commit order for one key. Everything an instance writes goes through the one
 *   connection that holds its locks: when it loses the connection it loses the locks and cannot
 *   write anything afterwards, so a partition is never drained by two instances.
 * - An outbox row is deleted once every sink it was routed to has it, or holds it in its own durable
 *   backlog (sidekick.deliveries). A sink that is slow or failing — more than `sinkBuffer` events
 *   in memory — is fed from that backlog instead (in queue order, so per-key order holds), and an
 *   event a sink still holds after `checkpointAfter` is copied there; so one sink's trouble costs
 *   neither memory nor the other sinks anything, and a crash then repeats only that sink's events.
 * - Bookkeeping (deletes, backlog copies, dead letters) is one statement per cycle, with
 *   synchronous_commit off: a lost acknowledgement only means a redelivery.
 * - Wake-up: a drain with nothing to do sets the wake-up mark (sidekick.arm_wakeup in sql/002_outbox.sql) — possible
 *   only while no writer is mid-transaction, else it looks again within 100 ms — fetches once more,
 *   and sleeps; the first writers after the mark NOTIFY (a NOTIFY in every transaction would
 *   serialise their commits). The NOTIFY is a hint: the drain also polls every `pollInterval` and
 *   catches up on every (re)connect.
 */
export interface OutboxSource {
  /** Connects (retrying in the background); resolves once connected the first time or stopped. */
  start(): Promise<void>;
  /** Stops reading events; deliveries in flight go on and are acknowledged by close(). */
  stopIntake(): Promise<void>;
  /**
   * Writes the last acknowledgements, releases the partitions, disconnects; gives up at `deadline`
   * (ms since the epoch, default in 10 s): what was not acknowledged is delivered again next time.
   * Idempotent.
   */
  close(deadline?: number): Promise<void>;
  readonly status: OutboxStatus;
}

export interface OutboxStatus {
  /** False when the drain is off (auto mode and no sidekick schema installed). */
  readonly enabled: boolean;
  readonly connected: boolean;
  readonly listening: boolean;
  readonly partitions: readonly number[];
  /** Outbox rows held in memory, and the scan bound (for diagnostics). */
  readonly inFlight: readonly number[];
  readonly floor: number;
  /** The drain found nothing to do, set the wake-up mark and sleeps until a NOTIFY or its next poll. */
  readonly asleep: boolean;
}

export interface OutboxSourceParams {
  readonly connection: pg.ClientConfig;
  readonly options: OutboxOptions;
  readonly router: Router;
  readonly dispatchers: ReadonlyMap<string, Dispatcher>;
  readonly logger: Logger;
  readonly metrics?: Metrics;
  /** Install (migrate) the schema when it is missing or behind (capture configured, or enabled: true). */
  readonly install: boolean;
  /** Beaten on every turn of the drain loop (a /readyz check). */
  readonly heartbeat?: Heartbeat;
}

interface SinkRun {
  readonly name: string;
  readonly dispatcher: Dispatcher;
  mode: 'live' | 'backlog';
  /** Jobs of this source in the dispatcher (every generation). */
  mem: number;
  /** Backlog rows up to here were read. */
  cursor: number;
  /** Backlog rows (seq) held in memory, until their removal is written. */
  readonly memSeqs: Set<number>;
}

/** One outbox row in memory: a statement's changed rows (or one published event). */
interface Entry {
  readonly qid: number;
  readonly part: number;
  readonly events: number;
  readonly fetchedAt: number;
  /** (event, sink) pairs whose outcome is neither known nor queued for writing. */
  open: number;
  readonly jobs: Job[];
  deleteQueued: boolean;
}

interface Job {
  readonly sink: SinkRun;
  readonly envelope: Envelope;
  readonly part: number;
  readonly gen: number;
  /** Fed from the outbox row of this entry. */
  readonly entry?: Entry;
  /** Its row in the sink's backlog: fed from there, or checkpointed. */
  seq?: number;
  /** Checkpoint copy queued (not written yet) or being written; refused: the backlog would not take it (it stays live). */
  ckpt?: 'queued' | 'flushing' | 'refused';
  /** The delivery outcome that arrived while the checkpoint copy was being written. */
  outcome?: Delivery;
  done: boolean;
  /** How its delivery ended (the dispatcher calls it; one shared function, no closure per event). */
  readonly delivered: (this: Job, d: Delivery) => void;
}

interface Spill { readonly sink: string; readonly part: number; readonly envelope: Envelope; readonly job?: Job; cancelled?: boolean }
interface Dead { readonly sink: string; readonly envelope: Envelope; readonly attempts: number; readonly code: string; readonly error: string }

interface Pending {
  spills: Spill[];
  dead: Dead[];
  /** Backlog jobs whose row can go (delivered, or dead-lettered). */
  doneBacklog: Job[];
  doneOutbox: Entry[];
}

/** The schema is older than the drain needs (SCHEMA_NEEDED) and this bridge does not install. */
class OutdatedSchema extends Error {
  constructor(readonly missing: readonly string[]) {
    super('the sidekick schema here is older than this pg-sidekick needs: run `sidekick install` to update it; the outbox is not drained until then');
  }
}

/** A backlog row FLUSH wrote: which (sink, event) got which seq. */
interface StoredSpill { readonly seq: string; readonly sink: string; readonly event_uid: string }

/**
 * A statement that failed on what it was given (SQLSTATE classes 22 data exception, 23 integrity,
 * 54 program limit), not on the connection or the server: the client is still usable.
 */
function isDataError(error: unknown): boolean {
  const code = (error as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' && /^(22|23|54)/.test(code);
}

/** An event whose images and payload are replaced by their JSON text (a JSON string): storable anywhere JSON is. */
function asText(e: Envelope): Envelope {
  const text = (v: unknown) => (v === undefined || v === null ? v : JSON.stringify(v));
  return { ...e, ...(e.new != null ? { new: text(e.new) as never } : {}), ...(e.old != null ? { old: text(e.old) as never } : {}),
    ...(e.payload !== undefined ? { payload: text(e.payload) } : {}) };
}

const emptyPending = (): Pending => ({ spills: [], dead: [], doneBacklog: [], doneOutbox: [] });
const isEmpty = (p: Pending) => p.spills.length + p.dead.length + p.doneBacklog.length + p.doneOutbox.length === 0;

/** Delay between two fetches that found some, but not a full batch, of events. */
const BUSY_DELAY_MS = 5;
/** The outbox holds every event durably: a sink's queue limit (for ephemeral events) does not apply. */
const FORCE = Object.freeze({ force: true });
/** How often partitions are rebalanced between instances. */
const REBALANCE_MS = 1000;
/** How often the scan bound is probed while fetching (two tiny queries and one xid each). */
const PROBE_MS = 50;
/** Byte budget of one fetch (stored size of the row images). */
const FETCH_BYTES = 16 * 1024 * 1024;
const MAX_ERROR_TEXT = 2000;
/** The most events one outbox row holds (the capture trigger's chunk size). */
const CHUNK_EVENTS = 1000;

export function createOutboxSource(params: OutboxSourceParams): OutboxSource {
  const { options, router, metrics } = params;
  const logger = params.logger.child({ source: 'outbox' });
  const batchSize = options.batchSize;
  const sinkBuffer = options.sinkBuffer;
  /**
   * Events of outbox rows held in memory at most: one outbox row (a statement chunk: at most
   * CHUNK_EVENTS events, sql/002_outbox.sql) below the spill threshold, because one fetch may overshoot
   * by a chunk; otherwise a sink that is only busy, not failing, would be spilled to its durable backlog
   * (a floor of batchSize × 4 once did that to every sink with sinkBuffer under 5000). A sinkBuffer
   * under two chunks leaves room for one fetch of up to batchSize events: exact for one-event rows,
   * while a statement chunk may still overshoot it (docs/outbox.md says to keep sinkBuffer ≥ 2000).
   */
  const maxEvents = Math.max(sinkBuffer - CHUNK_EVENTS, Math.min(batchSize, sinkBuffer));
  const sinks = new Map<string, SinkRun>([...params.dispatchers].map(([name, dispatcher]) => [name, {
    name, dispatcher, mode: 'live', mem: 0, cursor: 0, memSeqs: new Set<number>(),
  }]));

  // ---- connection-bound state (reset whenever the connection is lost) ------------------------
  let client: pg.Client | undefined;
  let gen = 0;
  let member: number | undefined;
  const owned = new Set<number>();
  const releasing = new Set<number>();
  const partLoad = new Int32Array(PARTITIONS);
  const entries = new Map<number, Entry>();
  let entryEvents = 0;
  const bound = createScanBound();
  let pending = emptyPending();
  let nextRebalance = 0;
  /** armed: the wake-up mark is set, one more fetch to go; asleep: until a NOTIFY or the next poll. */
  let idle: 'awake' | 'armed' | 'asleep' = 'awake';
  /** This database's installation name (sidekick.installation), the first part of every event id. */
  let installation = '';
  let idleBackoff = 1;
  let lastProbe = 0;
  const unknownBacklogSinks = new Set<string>();
  const unroutedChannels = new Set<string>();

  // ---- lifecycle -------------------------------------------------------------------------------
  let enabled = true;
  let intake = true;
  let closing = false;
  let loop: Promise<void> | undefined;
  let closed: Promise<void> | undefined;
  let listener: Listener | undefined;
  let listenerStarting = false;
  let firstConnect: () => void = () => {};
  const firstConnected = new Promise<void>((resolve) => { firstConnect = resolve; });
  const stopController = new AbortController();

  // ---- waking the loop -------------------------------------------------------------------------
  let wakeUp: (() => void) | undefined;
  let woken = false;
  let resultTimer: NodeJS.Timeout | undefined;
  /** Something happened that the loop must look at now (a NOTIFY, a reconnect, a stop). */
  function wake(): void {
    woken = true;
    wakeUp?.();
  }
  /** Delivery outcomes only need a prompt flush while the drain sleeps; batched by 10 ms. */
  function resultsArrived(): void {
    if (idle !== 'asleep' || resultTimer) return;
    resultTimer = setTimeout(() => { resultTimer = undefined; wake(); }, 10);
    resultTimer.unref();
  }
  function waitForWake(ms: number): Promise<void> {
    if (woken || ms <= 0) { woken = false; return Promise.resolve(); }
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      timer.unref();
      function done() { clearTimeout(timer); wakeUp = undefined; woken = false; resolve(); }
      wakeUp = done;
    });
  }

  // ---- deliveries ------------------------------------------------------------------------------
  function deliver(job: Job): void {
    job.sink.mem++;
    job.sink.dispatcher.deliverTo(job.envelope, job, FORCE);
  }

  function delivered(this: Job, d: Delivery): void {
    onOutcome(this, d);
  }

  function onOutcome(job: Job, d: Delivery): void {
    job.sink.mem--;
    resultsArrived();
    if (job.gen !== gen || job.done) return;
    if (d.status === 'aborted' || d.status === 'dropped') {
      // Stopped before delivery: its row stays, the next run delivers it.
      job.done = true;
      return;
    }
    if (job.ckpt === 'flushing') {
      job.outcome = d;
      return;
    }
    settle(job, d);
  }

  function settle(job: Job, d: Delivery): void {
    job.done = true;
    const dead = d.status === 'dead' ? d : undefined;
    if (dead) {
      pending.dead.push({
        sink: job.sink.name, envelope: job.envelope, attempts: dead.attempts, code: dead.error.code,
        error: errorMessage(dead.error).slice(0, MAX_ERROR_TEXT),
      });
    }
    if (job.ckpt === 'queued') {
      // Its backlog copy is not written yet, and not needed any more.
      const spill = pending.spills.find((s) => s.job === job);
      if (spill) spill.cancelled = true;
      job.ckpt = undefined;
      partLoad[job.part]!--;
      return;
    }
    if (job.seq !== undefined) {
      pending.doneBacklog.push(job);
      return;
    }
    const entry = job.entry!;
    entry.open--;
    if (entry.open === 0) queueDelete(entry);
  }

  function queueDelete(entry: Entry): void {
    if (entry.deleteQueued) return;
    entry.deleteQueued = true;
    pending.doneOutbox.push(entry);
  }

  function setMode(sink: SinkRun, mode: SinkRun['mode'], why: string): void {
    if (sink.mode === mode) return;
    sink.mode = mode;
    metrics?.outboxBacklogMode.set({ sink: sink.name }, mode === 'backlog' ? 1 : 0);
    if (mode === 'backlog') logger.warn({ sink: sink.name, why }, 'sink is fed from its durable backlog now');
    else logger.info({ sink: sink.name }, 'sink caught up with its durable backlog; live again');
  }

  // ---- routing the events of an outbox row ----------------------------------------------------
  function route(entry: Entry, envelope: Envelope, target: string | null): void {
    let names: readonly string[];
    if (target !== null) {
      if (!sinks.has(target)) {
        pending.dead.push({ sink: target, envelope, attempts: 0, code: 'SINK_UNKNOWN', error: `sink "${target}" is not in the config` });
        return;
      }
      names = [target];
    } else {
      names = router.route(envelope);
    }
    if (names.length === 0) {
      // Nothing wants it: drop it, as the ephemeral path does (counted; logged once per channel).
      metrics?.unrouted.inc({ channel: envelope.channel });
      if (!unroutedChannels.has(envelope.channel) && unroutedChannels.size < 1000) {
        unroutedChannels.add(envelope.channel);
        logger.warn({ channel: envelope.channel }, 'no route matches this channel; its outbox events are discarded');
      }
      return;
    }
    for (const name of names) {
      const sink = sinks.get(name) as SinkRun;
      if (sink.mode === 'live' && sink.mem < sinkBuffer) {
        const job: Job = { sink, envelope, part: entry.part, gen, entry, done: false, delivered };
        entry.jobs.push(job);
        entry.open++;
        deliver(job);
      } else {
        setMode(sink, 'backlog', `more than ${sinkBuffer} events waiting (outbox.sinkBuffer)`);
        pending.spills.push({ sink: name, part: entry.part, envelope });
        metrics?.outboxSpilled.inc({ sink: name });
      }
    }
  }

  /** Events a sink has held for long get a backlog copy, so the outbox row can go. */
  function checkpoint(now: number): void {
    for (const entry of entries.values()) {
      if (now - entry.fetchedAt < options.checkpointAfter) break;
      if (entry.deleteQueued) continue;
      for (const job of entry.jobs) {
        if (job.done || job.ckpt || job.seq !== undefined) continue;
        job.ckpt = 'queued';
        partLoad[job.part]!++;
        pending.spills.push({ sink: job.sink.name, part: job.part, envelope: job.envelope, job });
        metrics?.outboxSpilled.inc({ sink: job.sink.name });
        entry.open--;
      }
      if (entry.open === 0) queueDelete(entry);
    }
  }

  // ---- database work ---------------------------------------------------------------------------
  function activeParts(): number[] | null {
    if (owned.size === PARTITIONS && releasing.size === 0) return null;
    return [...owned].filter((p) => !releasing.has(p)).sort((a, b) => a - b);
  }

  async function flush(c: pg.Client): Promise<void> {
    checkpoint(Date.now());
    if (isEmpty(pending)) return;
    const batch = pending;
    pending = emptyPending();
    const spills = batch.spills.filter((s) => !s.cancelled);
    for (const s of spills) if (s.job) s.job.ckpt = 'flushing';
    let stored: readonly StoredSpill[];
    try {
      stored = await write(c, spills, batch.dead, batch.doneBacklog, batch.doneOutbox);
    } catch (error) {
      // One event the stores refuse must not hold up everything else: when the statement failed on
      // the data (not the connection), write the events one by one and set the refused ones apart.
      if (!isDataError(error)) throw error;
      stored = await writeOneByOne(c, spills, batch, error);
    }
    // Written: now the in-memory state may follow.
    const seqOf = new Map(stored.map((r) => [`${r.sink}\u0000${r.event_uid}`, Number(r.seq)]));
    for (const s of spills) {
      const job = s.job;
      if (!job || job.gen !== gen || job.ckpt === 'refused') continue;
      job.ckpt = undefined;
      const seq = seqOf.get(`${s.sink}\u0000${job.envelope.id}`);
      if (seq === undefined) {
        // The outbox row was gone (cannot happen while we hold the partition): forget the job.
        partLoad[job.part]!--;
        continue;
      }
      job.seq = seq;
      job.sink.memSeqs.add(seq);
      if (job.outcome) settle(job, job.outcome);
    }
    for (const job of batch.doneBacklog) {
      job.sink.memSeqs.delete(job.seq as number);
      partLoad[job.part]!--;
    }
    for (const entry of batch.doneOutbox) {
      entries.delete(entry.qid);
      entryEvents -= entry.events;
      partLoad[entry.part]!--;
    }
    if (batch.dead.length > 0) logger.info({ count: batch.dead.length }, 'events written to sidekick.dead_letters');
  }

  /** The bookkeeping statement (FLUSH) for these spills, dead letters and done rows. */
  async function write(c: pg.Client, spills: readonly Spill[], dead: readonly Dead[], doneBacklog: readonly Job[], doneOutbox: readonly Entry[]): Promise<readonly StoredSpill[]> {
    const result = await c.query<StoredSpill>(FLUSH, [
      JSON.stringify(spills.map((s, ord) => ({ sink: s.sink, part: s.part, ord, ...eventRecord(s.envelope) }))),
      JSON.stringify(dead.map((d) => ({ sink: d.sink, attempts: d.attempts, error_code: d.code, error: storableText(d.error), ...eventRecord(d.envelope) }))),
      doneBacklog.map((j) => j.seq as number),
      doneOutbox.map((e) => e.qid),
    ]);
    return result.rows;
  }

  /**
   * The slow path of flush(), after the one statement failed on its data: each spill and each dead
   * letter alone, then the done rows. A checkpoint copy the backlog refuses is not needed: its event
   * stays live and keeps its outbox row. Any other spill the backlog refuses (its event is nowhere
   * else) becomes a dead letter saying why; a dead letter refused as it is is stored with its images
   * as JSON text instead (lossless); only if that fails too is the event logged whole and counted as
   * dropped. Never throws for data.
   */
  async function writeOneByOne(c: pg.Client, spills: readonly Spill[], batch: Pending, cause: unknown): Promise<StoredSpill[]> {
    logger.warn({ err: errorMessage(cause) }, 'the drain\'s bookkeeping refused some event; writing them one by one to set it apart');
    const stored: StoredSpill[] = [];
    const dead = [...batch.dead];
    for (const s of spills) {
      try {
        stored.push(...await write(c, [s], [], [], []));
      } catch (error) {
        if (!isDataError(error)) throw error;
        refused(s.sink, s.envelope, 'the sink\'s backlog (sidekick.deliveries)', error);
        if (s.job) {
          keepLive(s.job, batch);
          continue;
        }
        dead.push({ sink: s.sink, envelope: s.envelope, attempts: 0, code: 'STORE_REFUSED',
          error: `could not be stored in the sink's backlog: ${errorMessage(error)}`.slice(0, MAX_ERROR_TEXT) });
      }
    }
    for (const d of dead) {
      try {
        await write(c, [], [d], [], []);
      } catch (error) {
        if (!isDataError(error)) throw error;
        refused(d.sink, d.envelope, 'sidekick.dead_letters', error);
        try {
          await write(c, [], [{ ...d, envelope: asText(d.envelope), code: 'STORE_REFUSED',
            error: `${d.error} — stored with its images as JSON text: ${errorMessage(error)}`.slice(0, MAX_ERROR_TEXT) }], [], []);
        } catch (again) {
          if (!isDataError(again)) throw again;
          metrics?.dropped.inc({ sink: d.sink });
          logger.error({ sink: d.sink, id: d.envelope.id, event: d.envelope, err: errorMessage(again) },
            'event could not be stored as a dead letter at all; it is dropped (logged here whole)');
        }
      }
    }
    await write(c, [], [], batch.doneBacklog, batch.doneOutbox);
    return stored;
  }

  /** A job whose checkpoint copy was refused: live again, its outbox row kept until it is delivered. */
  function keepLive(job: Job, batch: Pending): void {
    job.ckpt = 'refused';
    partLoad[job.part]!--;
    const entry = job.entry!;
    entry.open++;
    if (entry.deleteQueued) {
      entry.deleteQueued = false;
      batch.doneOutbox = batch.doneOutbox.filter((e) => e !== entry);
    }
    if (job.outcome) {
      // Its delivery ended while the copy was being written.
      const d = job.outcome;
      job.outcome = undefined;
      settle(job, d);
    }
  }

  /** Counted and logged once per event and store. */
  function refused(sink: string, envelope: Envelope, store: string, error: unknown): void {
    metrics?.storeRefused.inc({ sink });
    logger.error({ sink, id: envelope.id, channel: envelope.channel, err: errorMessage(error) }, `event refused by ${store}; set apart`);
  }

  async function fetchOutbox(c: pg.Client): Promise<number> {
    if (entryEvents >= maxEvents) return 0;
    const floor = bound.floor;
    const skip: number[] = [];
    for (const qid of entries.keys()) if (qid > floor) skip.push(qid);
    const limit = Math.min(batchSize, maxEvents - entryEvents);
    if (Date.now() - lastProbe >= PROBE_MS) {
      // The scan bound's probe: the sequence position, then a fresh xid (its own transaction).
      lastProbe = Date.now();
      const m = await c.query<{ last_value: string }>(LAST_VALUE);
      const x = await c.query<{ xid: string }>(FRESH_XID);
      bound.probe({ lastValue: Number(m.rows[0]?.last_value ?? 0), xid: BigInt(x.rows[0]?.xid ?? 0) });
    }
    const { rows } = await c.query<OutboxRow & { snap_xmin: string }>(FETCH_OUTBOX, [floor, skip, activeParts(), limit, FETCH_BYTES]);
    const head = rows[0];
    if (!head) throw new Error('outbox fetch returned no snapshot row');
    const fetched = head.id === null ? [] : rows;
    const last = fetched.at(-1);
    bound.observe({
      xmin: BigInt(head.snap_xmin),
      truncated: last !== undefined && (fetched.length >= limit || Number(last.running_events) >= limit || Number(last.running_bytes) >= FETCH_BYTES),
      lastId: last ? Number(last.id) : undefined,
    });
    const now = Date.now();
    let count = 0;
    for (const row of fetched) {
      const events = outboxEvents(row, installation);
      const entry: Entry = { qid: Number(row.id), part: row.part, events: events.length, fetchedAt: now, open: 0, jobs: [], deleteQueued: false };
      entries.set(entry.qid, entry);
      entryEvents += entry.events;
      partLoad[entry.part]!++;
      // (The events of one outbox row share their source and channel: counted once per row.)
      const first = events[0];
      if (metrics && first) metrics.received.inc({ source: first.source, channel: first.channel }, events.length);
      for (const envelope of events) route(entry, envelope, row.target);
      if (entry.open === 0) queueDelete(entry);
      count += events.length;
    }
    return count;
  }

  /** Feeds sinks in backlog mode from sidekick.deliveries, in queue order, as room allows. */
  async function feedBacklogs(c: pg.Client): Promise<boolean> {
    let fed = false;
    for (const sink of sinks.values()) {
      if (sink.mode !== 'backlog') continue;
      const room = sinkBuffer - sink.mem;
      if (room <= 0) continue;
      const limit = Math.min(room, batchSize);
      const { rows } = await c.query<BacklogRow>(FETCH_BACKLOG, [sink.name, sink.cursor, activeParts(), limit]);
      for (const row of rows) {
        const seq = Number(row.seq);
        if (seq > sink.cursor) sink.cursor = seq;
        if (sink.memSeqs.has(seq)) continue;
        const job: Job = { sink, envelope: rowEnvelope(row, installation), part: row.part, gen, seq, done: false, delivered };
        sink.memSeqs.add(seq);
        partLoad[job.part]!++;
        deliver(job);
        fed = true;
      }
      // Everything queued so far is in memory (spills are written before this read, and routing
      // comes after it): later events can go straight to the sink again, behind these.
      if (rows.length < limit) setMode(sink, 'live', 'caught up');
    }
    return fed;
  }

  async function liveMembers(c: pg.Client): Promise<number[]> {
    const { rows } = await c.query<{ slot: number }>(`
      SELECT (objid::bigint - ${MEMBER_BASE})::int AS slot FROM pg_locks
      WHERE locktype = 'advisory' AND granted AND objsubid = 2 AND classid = ${LOCK_CLASS}::oid
        AND objid::bigint >= ${MEMBER_BASE} AND objid::bigint < ${MEMBER_BASE + MEMBER_SLOTS}
        AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`);
    return rows.map((r) => r.slot);
  }

  async function acquired(c: pg.Client, parts: number[]): Promise<void> {
    for (const p of parts) owned.add(p);
    // New partitions: their rows below the old scan bound were never looked at.
    bound.reset();
    const { rows } = await c.query<{ sink: string }>(BACKLOG_SINKS, [parts]);
    for (const { sink: name } of rows) {
      const sink = sinks.get(name);
      if (!sink) {
        if (!unknownBacklogSinks.has(name)) {
          unknownBacklogSinks.add(name);
          logger.warn({ sink: name }, 'sidekick.deliveries holds events for a sink that is not in the config; they stay there');
        }
        continue;
      }
      setMode(sink, 'backlog', 'events are waiting in its durable backlog');
      sink.cursor = 0;
    }
    logger.info({ partitions: [...owned].sort((a, b) => a - b) }, 'draining outbox partitions');
  }

  async function rebalance(c: pg.Client): Promise<void> {
    nextRebalance = Date.now() + REBALANCE_MS;
    const live = await liveMembers(c);
    if (!live.includes(member as number)) throw new Error('lost the member lock');
    const share = Math.ceil(PARTITIONS / live.length);
    // Give back what is beyond a fair share, once nothing of those partitions is in flight here.
    const keep = [...owned].filter((p) => !releasing.has(p)).sort((a, b) => a - b);
    while (keep.length > share) releasing.add(keep.pop() as number);
    while (keep.length < share && releasing.size > 0) {
      const p = Math.min(...releasing);
      releasing.delete(p);
      keep.push(p);
    }
    for (const p of [...releasing]) {
      if (partLoad[p] !== 0) continue;
      await c.query('SELECT pg_advisory_unlock($1, $2)', [LOCK_CLASS, p]);
      releasing.delete(p);
      owned.delete(p);
      logger.info({ partition: p, members: live.length }, 'handed an outbox partition over to another instance');
    }
    if (owned.size < share) {
      // Start at an offset per member so that instances starting together do not all fight over 0, 1, 2 …
      const offset = ((member as number) * 7) % PARTITIONS;
      const candidates = Array.from({ length: PARTITIONS }, (_, i) => (i + offset) % PARTITIONS).filter((p) => !owned.has(p));
      const { rows } = await c.query<{ p: number }>(
        'SELECT p FROM unnest($2::int[]) WITH ORDINALITY AS t(p, o) WHERE pg_try_advisory_lock($1, p) ORDER BY o LIMIT $3',
        [LOCK_CLASS, candidates, share - owned.size]);
      if (rows.length > 0) await acquired(c, rows.map((r) => r.p));
    }
    metrics?.outboxPartitions.set(owned.size);
  }

  // ---- connecting ------------------------------------------------------------------------------
  async function connect(): Promise<pg.Client | undefined> {
    const c = new pg.Client({ ...params.connection, keepAlive: true, application_name: 'pg-sidekick drain' });
    c.on('error', (error) => logger.debug({ err: error.message }, 'drain connection error'));
    await c.connect();
    try {
      await c.query('SET synchronous_commit = off');
      const { rows } = await c.query<{ installed: boolean; migrations: boolean }>(
        `SELECT to_regclass('sidekick.outbox') IS NOT NULL AS installed, to_regclass('sidekick.migrations') IS NOT NULL AS migrations`);
      const found = rows[0] ?? { installed: false, migrations: false };
      // (A separate query: a reference to a missing table fails even in a branch that is not taken.)
      const recorded = found.migrations ? (await c.query<{ id: number; name: string }>('SELECT id, name FROM sidekick.migrations')).rows : [];
      if (recorded.some((r) => isFolded(r.name))) throw new PreFoldSchema();
      const applied = new Set(recorded.map((r) => r.id));
      const missing = listMigrations().filter((m) => !applied.has(m.id));
      if (params.install && (!found.installed || missing.length > 0)) {
        const result = await migrate(c);
        if (result.applied.length > 0) logger.info({ applied: result.applied }, 'installed the sidekick schema');
      } else if (!found.installed) {
        enabled = false;
        logger.info('the sidekick schema is not installed here: the durable outbox is off (run `sidekick install`, or configure capture:)');
        await c.end().catch(() => {});
        return undefined;
      } else if (missing.length > 0) {
        // The drain reads and writes the current shape only: wait for the upgrade rather than fail on it.
        throw new OutdatedSchema(missing.map((m) => m.name));
      }
      installation = (await c.query<{ id: string }>(INSTALLATION)).rows[0]?.id ?? '';
      if (installation === '') throw new Error('sidekick.installation is empty: run `sidekick install` again');
      const slot = await c.query<{ s: number }>(
        `SELECT s FROM generate_series(0, ${MEMBER_SLOTS - 1}) AS s WHERE pg_try_advisory_lock($1, ${MEMBER_BASE} + s) LIMIT 1`, [LOCK_CLASS]);
      if (!slot.rows[0]) throw new Error(`more than ${MEMBER_SLOTS} drain instances on this database`);
      member = slot.rows[0].s;
      return c;
    } catch (error) {
      await c.end().catch(() => {});
      throw error;
    }
  }

  function resetState(): void {
    gen++;
    entries.clear();
    entryEvents = 0;
    pending = emptyPending();
    partLoad.fill(0);
    owned.clear();
    releasing.clear();
    bound.reset();
    for (const sink of sinks.values()) {
      sink.memSeqs.clear();
      sink.cursor = 0;
      sink.mode = 'live';
      metrics?.outboxBacklogMode.set({ sink: sink.name }, 0);
    }
    idle = 'awake';
    lastProbe = 0;
    member = undefined;
    nextRebalance = 0;
    metrics?.outboxPartitions.set(0);
  }

  let listenerTried = 0;
  async function ensureListener(): Promise<void> {
    // (Once started, the listener reconnects by itself; a first connection that failed is retried here.)
    if (listener || listenerStarting || Date.now() - listenerTried < 5_000) return;
    listenerStarting = true;
    listenerTried = Date.now();
    const candidate = createListener({
      connection: params.connection,
      channels: [WAKE_CHANNEL],
      logger,
      applicationName: 'pg-sidekick drain wake-up',
      onNotification: () => wake(),
      // After a reconnect, catch up on whatever was committed while the wake-ups were lost.
      onEvent: (event) => { if (event.type === 'connected') wake(); },
    });
    try {
      await candidate.start();
      listener = candidate;
    } catch (error) {
      logger.warn({ err: errorMessage(error) }, 'cannot LISTEN for outbox wake-ups yet; polling meanwhile');
    } finally {
      listenerStarting = false;
    }
  }

  // ---- the loop --------------------------------------------------------------------------------
  /** One round: rebalance, write bookkeeping, feed backlogs, fetch; returns how long to wait. */
  async function cycle(c: pg.Client): Promise<number> {
    params.heartbeat?.beat();
    if (!listener) void ensureListener();
    if (Date.now() >= nextRebalance && !closing) await rebalance(c);
    await flush(c);
    if (!intake || closing) return closing ? 0 : 50;
    const fed = await feedBacklogs(c);
    const fetched = await fetchOutbox(c);
    if (fetched > 0 || fed) {
      idle = 'awake';
      idleBackoff = 1;
      return fetched >= Math.min(batchSize, maxEvents) ? 0 : BUSY_DELAY_MS;
    }
    if (!isEmpty(pending)) return BUSY_DELAY_MS;
    if (entryEvents >= maxEvents) return BUSY_DELAY_MS;
    // Nothing to do. The fetch after the mark was set found nothing either: sleep until a NOTIFY or
    // the safety-net poll.
    if (idle === 'armed') {
      idle = 'asleep';
    } else {
      // Set the wake-up mark (sidekick.arm_wakeup in sql/002_outbox.sql) and fetch once more:
      // everything below the mark is visible by then. Setting the mark waits for no one: while a
      // writer is mid-transaction, look again soon.
      const armed = (await c.query<{ armed: boolean }>(ARM_WAKEUP)).rows[0]?.armed === true;
      idle = armed ? 'armed' : 'awake';
      if (armed) return 0;
      idleBackoff = Math.min(idleBackoff * 2, 100);
      return idleBackoff;
    }
    const oldest = entries.values().next().value as Entry | undefined;
    const checkpointIn = oldest ? Math.max(10, oldest.fetchedAt + options.checkpointAfter - Date.now()) : Number.POSITIVE_INFINITY;
    return Math.min(options.pollInterval, checkpointIn);
  }

  let outdatedSaid = false;
  async function run(): Promise<void> {
    let attempt = 0;
    while (!stopController.signal.aborted) {
      if (!client) {
        if (closing) return;
        try {
          client = await connect();
          if (!client) { firstConnect(); return; }
          attempt = 0;
          metrics?.outboxConnected.set(1);
          logger.info({ member }, 'outbox drain connected; catching up');
          firstConnect();
        } catch (error) {
          attempt++;
          if (error instanceof OutdatedSchema || error instanceof PreFoldSchema) {
            // Not a fault of the connection: say so once, look again every pollInterval.
            if (!outdatedSaid) logger.error(error instanceof OutdatedSchema ? { missing: error.missing } : {}, error.message);
            outdatedSaid = true;
            // Started as far as it can be: the bridge runs (not ready) and the drain looks again.
            firstConnect();
            await sleep(options.pollInterval, stopController.signal);
            continue;
          }
          const retryInMs = reconnectDelay(attempt, RECONNECT_MAX_MS);
          logger.error({ err: errorMessage(error), attempt, retryInMs }, 'outbox drain cannot connect; retrying');
          await sleep(retryInMs, stopController.signal);
          continue;
        }
      }
      const c = client;
      try {
        const wait = await cycle(c);
        if (closing) {
          await flush(c);
          return;
        }
        await waitForWake(wait);
      } catch (error) {
        if (closing && stopController.signal.aborted) return;
        // Whatever failed, the state may no longer match the database: start over from it.
        logger.error({ err: errorMessage(error) }, 'outbox drain lost its connection or failed; reconnecting and catching up (events in flight may be delivered again)');
        metrics?.outboxConnected.set(0);
        client = undefined;
        resetState();
        await c.end().catch(() => {});
        attempt++;
        await sleep(reconnectDelay(attempt, RECONNECT_MAX_MS), stopController.signal);
      }
    }
  }

  return {
    get status() {
      return {
        enabled, connected: client !== undefined, listening: listener?.connected ?? false, partitions: [...owned].sort((a, b) => a - b),
        inFlight: [...entries.keys()], floor: bound.floor, asleep: idle === 'asleep',
      };
    },
    start() {
      loop ??= run().catch((error) => logger.error({ err: errorMessage(error) }, 'outbox drain stopped unexpectedly'));
      return Promise.race([firstConnected, loop]);
    },
    async stopIntake() {
      intake = false;
      wake();
    },
    close(deadline = Date.now() + 10_000) {
      closed ??= (async () => {
        intake = false;
        closing = true;
        // Not connected: nothing to write, and a reconnect wait must not hold up the stop.
        if (!client) stopController.abort();
        wake();
        // The loop writes the last acknowledgements and returns; a dead database must not hold the
        // stop past its deadline (a moment is kept for disconnecting).
        const finished = (await settleBy(loop, deadline - 200)).state !== 'late';
        stopController.abort();
        wakeUp?.();
        if (resultTimer) clearTimeout(resultTimer);
        await settleBy(listener?.stop(), deadline);
        const c = client;
        client = undefined;
        if (c) {
          // A query stuck on a dead server is ended by closing its socket: the loop's await fails and it returns.
          if (!finished || (await settleBy(c.end(), deadline)).state !== 'done') clientSocket(c)?.destroy();
        }
        metrics?.outboxConnected.set(0);
        metrics?.outboxPartitions.set(0);
        await settleBy(loop, deadline);
      })();
      return closed;
    },
  };
}
