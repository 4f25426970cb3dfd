import pg from 'pg';
import type { Logger } from 'pino';
import type { OutboxOptions } from '../config.js';
import { errorMessage } from '../errors.js';
import type { Metrics } from '../metrics.js';
import { writeBatch } from '../outbox/bookkeeping.js';
import { createLedger, RESET, type Job } from '../outbox/ledger.js';
import { createMembership } from '../outbox/membership.js';
import {
  ARM_WAKEUP,
  FETCH_BACKLOG,
  FETCH_OUTBOX,
  FRESH_XID,
  INSTALLATION,
  LAST_VALUE,
  PARTITIONS,
  WAKE_CHANNEL,
  outboxEvents,
  rowEnvelope,
  type BacklogRow,
  type OutboxRow,
} from '../outbox/queries.js';
import { createScanBound } from '../outbox/scan-bound.js';
import { clientSocket, createListener, type Listener } from '../pg/listener.js';
import type { Pipeline } from '../pipeline.js';
import type { Heartbeat } from '../readiness.js';
import { isFolded, listMigrations, migrate, PreFoldSchema } from '../sql/migrate.js';
import { reconnectDelay, RECONNECT_MAX_MS, settleBy, sleep } from '../wait.js';
import { createWakeup } from '../wake.js';

/**
 * The durable source: drains sidekick.events (sidekick.outbox and sidekick.row_changes) into the
 * pipeline. This file is the loop and its I/O; the parts (docs/architecture.md):
 * - src/outbox/ledger.ts — which events are in memory and which sink has which (pure state);
 * - src/outbox/membership.ts — which key partitions this instance drains;
 * - src/outbox/scan-bound.ts — where a fetch may start (provably safe, no "last id" cursor);
 * - src/outbox/bookkeeping.ts — writing what the ledger says (deletes, backlog copies, dead letters);
 * - src/outbox/queries.ts — all of the drain's SQL; src/wake.ts — napping until woken.
 *
 * A round: rebalance the partitions, write the bookkeeping, feed backlogged sinks from their backlog,
 * fetch new events. Wake-up: a drain with nothing to do sets the wake-up mark (sidekick.arm_wakeup in
 * sql/002_outbox.sql) — possible only while no writer is mid-transaction, else it looks again within
 * 100 ms — fetches once more, and sleeps; the first writers after the mark NOTIFY (a NOTIFY in every
 * transaction would serialise their commits). The NOTIFY is a hint: the drain also polls every
 * `pollInterval` and catches up on every (re)connect. docs/outbox.md has the user-facing version.
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
  readonly pipeline: Pipeline;
  readonly logger: Logger;
  readonly metrics?: Metrics;
  /** Install (migrate) the schema when it is missing or behind (capture configured, or enabled: true). */
  readonly install: boolean;
  /** Beaten on every turn of the drain loop (a /readyz check). */
  readonly heartbeat?: Heartbeat;
}

/** The schema is behind this version and this bridge does not install. */
class OutdatedSchema extends Error {
  constructor(readonly missing: readonly string[]) {
    super('the sidekick schema here is older than this pg-sidekick needs: run `sidekick install` to update it; the outbox is not drained until then');
  }
}

/** Delay between two fetches that found some, but not a full batch, of events. */
const BUSY_DELAY_MS = 5;
/** How often partitions are rebalanced between instances. */
const REBALANCE_MS = 1000;
/** How often the scan bound is probed while fetching (two tiny queries and one xid each). */
const PROBE_MS = 50;
/** Byte budget of one fetch (stored size of the row images). */
const FETCH_BYTES = 16 * 1024 * 1024;
/** The most events one outbox row holds (the capture trigger's chunk size). */
const CHUNK_EVENTS = 1000;

export function createOutboxSource(params: OutboxSourceParams): OutboxSource {
  const { options, pipeline, metrics } = params;
  const logger = params.logger.child({ source: 'outbox' });
  const batchSize = options.batchSize;
  const sinkBuffer = options.sinkBuffer;
  /**
   * Events of outbox rows held in memory at most: one outbox row (a statement chunk: at most
   * CHUNK_EVENTS events) below the spill threshold, because one fetch may overshoot by a chunk;
   * otherwise a sink that is only busy, not failing, would be spilled to its durable backlog (a floor
   * of batchSize × 4 once did that to every sink with sinkBuffer under 5000). A sinkBuffer under two
   * chunks leaves room for one fetch of up to batchSize events: exact for one-event rows, while a
   * statement chunk may still overshoot it (docs/outbox.md says to keep sinkBuffer ≥ 2000).
   */
  const maxEvents = Math.max(sinkBuffer - CHUNK_EVENTS, Math.min(batchSize, sinkBuffer));
  const sinkNames = [...pipeline.dispatchers.keys()];
  const ledger = createLedger(
    { sinks: sinkNames, sinkBuffer, checkpointAfter: options.checkpointAfter, partitions: PARTITIONS },
    {
      deliver: (job: Job) => pipeline.deliver(job.sink, job.envelope, job, true),
      modeChanged(sink, mode, why) {
        metrics?.outboxBacklogMode.set({ sink }, mode === 'backlog' ? 1 : 0);
        if (why === RESET) return;
        if (mode === 'backlog') logger.warn({ sink, why }, 'sink is fed from its durable backlog now');
        else logger.info({ sink }, 'sink caught up with its durable backlog; live again');
      },
      spilled: (sink) => metrics?.outboxSpilled.inc({ sink }),
      outcome: () => resultsArrived(),
    },
  );
  const membership = createMembership();
  const bound = createScanBound();
  const stopController = new AbortController();
  const wakeup = createWakeup(stopController.signal);

  // ---- connection-bound state (reset whenever the connection is lost) ------------------------
  let client: pg.Client | undefined;
  let nextRebalance = 0;
  /** armed: the wake-up mark is set, one more fetch to go; asleep: until a NOTIFY or the next poll. */
  let idle: 'awake' | 'armed' | 'asleep' = 'awake';
  /** This database's installation name (sidekick.installation), the first part of every event id. */
  let installation = '';
  let idleBackoff = 1;
  let lastProbe = 0;
  const unknownBacklogSinks = new Set<string>();

  // ---- lifecycle -------------------------------------------------------------------------------
  let enabled = true;
  let intake = true;
  let closing = false;
  let loop: Promise<void> | undefined;
  let closed: Promise<void> | undefined;
  let listener: Listener | undefined;
  let listenerStarting = false;
  let listenerTried = 0;
  let firstConnect: () => void = () => {};
  const firstConnected = new Promise<void>((resolve) => {
    firstConnect = resolve;
  });
  let resultTimer: NodeJS.Timeout | undefined;

  /** Delivery outcomes only need a prompt write while the drain sleeps; batched by 10 ms. */
  function resultsArrived(): void {
    if (idle !== 'asleep' || resultTimer) return;
    resultTimer = setTimeout(() => {
      resultTimer = undefined;
      wakeup.wake();
    }, 10);
    resultTimer.unref();
  }

  // ---- database work ---------------------------------------------------------------------------
  async function flush(c: pg.Client): Promise<void> {
    ledger.checkpoint(Date.now());
    const batch = ledger.take();
    if (!batch) return;
    const stored = await writeBatch(c, batch, { logger, metrics });
    ledger.committed(batch, stored);
    if (batch.dead.length > 0) logger.info({ count: batch.dead.length }, 'events written to sidekick.dead_letters');
  }

  async function fetchOutbox(c: pg.Client): Promise<number> {
    if (ledger.entryEvents >= maxEvents) return 0;
    const floor = bound.floor;
    const skip: number[] = [];
    for (const id of ledger.entryIds()) if (id > floor) skip.push(id);
    const limit = Math.min(batchSize, maxEvents - ledger.entryEvents);
    if (Date.now() - lastProbe >= PROBE_MS) {
      // The scan bound's probe: the sequence position, then a fresh xid (its own transaction).
      lastProbe = Date.now();
      const m = await c.query<{ last_value: string }>(LAST_VALUE);
      const x = await c.query<{ xid: string }>(FRESH_XID);
      bound.probe({ lastValue: Number(m.rows[0]?.last_value ?? 0), xid: BigInt(x.rows[0]?.xid ?? 0) });
    }
    const { rows } = await c.query<OutboxRow & { snap_xmin: string }>(FETCH_OUTBOX, [floor, skip, membership.active(), limit, FETCH_BYTES]);
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
      // (The events of one outbox row share their source and channel: counted once per row.)
      const first = events[0];
      if (metrics && first) metrics.received.inc({ source: first.source, channel: first.channel }, events.length);
      // A dead letter sent back goes to its one sink; everything else where the routes say.
      const target = row.target === null ? undefined : [row.target];
      ledger.admit(
        { id: Number(row.id), part: row.part, readAt: now },
        events.map((envelope) => ({ envelope, sinks: target ?? pipeline.route(envelope) })),
      );
      count += events.length;
    }
    return count;
  }

  /** Feeds backlogged sinks from sidekick.deliveries, in queue order, as room allows. */
  async function feedBacklogs(c: pg.Client): Promise<boolean> {
    let fed = false;
    for (const sink of sinkNames) {
      const room = ledger.backlogRoom(sink);
      if (room <= 0) continue;
      const limit = Math.min(room, batchSize);
      const { rows } = await c.query<BacklogRow>(FETCH_BACKLOG, [sink, ledger.backlogCursor(sink), membership.active(), limit]);
      for (const row of rows) {
        if (ledger.admitBacklog(sink, Number(row.seq), row.part, rowEnvelope(row, installation))) fed = true;
      }
      if (rows.length < limit) ledger.backlogDrained(sink);
    }
    return fed;
  }

  async function rebalance(c: pg.Client): Promise<void> {
    nextRebalance = Date.now() + REBALANCE_MS;
    const { taken, released, members, backlogs } = await membership.rebalance(c, ledger.load);
    for (const p of released) logger.info({ partition: p, members }, 'handed an outbox partition over to another instance');
    if (taken.length > 0) {
      // New partitions: their rows below the old scan bound were never looked at.
      bound.reset();
      for (const name of backlogs) {
        if (sinkNames.includes(name) || unknownBacklogSinks.has(name)) continue;
        unknownBacklogSinks.add(name);
        logger.warn({ sink: name }, 'sidekick.deliveries holds events for a sink that is not in the config; they stay there');
      }
      ledger.backlogFound(backlogs.filter((name) => sinkNames.includes(name)));
      logger.info({ partitions: membership.owned() }, 'draining outbox partitions');
    }
    metrics?.outboxPartitions.set(membership.owned().length);
  }

  // ---- connecting ------------------------------------------------------------------------------
  async function connect(): Promise<pg.Client | undefined> {
    const c = new pg.Client({ ...params.connection, keepAlive: true, application_name: 'pg-sidekick drain' });
    c.on('error', (error) => logger.debug({ err: error.message }, 'drain connection error'));
    await c.connect();
    try {
      await c.query('SET synchronous_commit = off');
      const { rows } = await c.query<{ installed: boolean; migrations: boolean }>(
        `SELECT to_regclass('sidekick.outbox') IS NOT NULL AS installed, to_regclass('sidekick.migrations') IS NOT NULL AS migrations`,
      );
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
      await membership.join(c);
      return c;
    } catch (error) {
      await c.end().catch(() => {});
      throw error;
    }
  }

  /** The connection is gone: the database is the truth again. */
  function resetState(): void {
    ledger.reset();
    membership.reset();
    bound.reset();
    idle = 'awake';
    lastProbe = 0;
    nextRebalance = 0;
    metrics?.outboxPartitions.set(0);
  }

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
      onNotification: () => wakeup.wake(),
      // After a reconnect, catch up on whatever was committed while the wake-ups were lost.
      onEvent: (event) => {
        if (event.type === 'connected') wakeup.wake();
      },
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
    if (ledger.dirty || ledger.entryEvents >= maxEvents) return BUSY_DELAY_MS;
    // Nothing to do. The fetch after the mark was set found nothing either: sleep until a NOTIFY or
    // the safety-net poll (or the next checkpoint of an event a sink still holds).
    if (idle === 'armed') {
      idle = 'asleep';
      return Math.min(options.pollInterval, Math.max(10, ledger.nextCheckpoint(Date.now())));
    }
    // Set the wake-up mark and fetch once more: everything below the mark is visible by then.
    // Setting the mark waits for no one: while a writer is mid-transaction, look again soon.
    const armed = (await c.query<{ armed: boolean }>(ARM_WAKEUP)).rows[0]?.armed === true;
    idle = armed ? 'armed' : 'awake';
    if (armed) return 0;
    idleBackoff = Math.min(idleBackoff * 2, 100);
    return idleBackoff;
  }

  let outdatedSaid = false;
  async function run(): Promise<void> {
    let attempt = 0;
    while (!stopController.signal.aborted) {
      if (!client) {
        if (closing) return;
        try {
          client = await connect();
          if (!client) {
            firstConnect();
            return;
          }
          attempt = 0;
          metrics?.outboxConnected.set(1);
          logger.info({ member: membership.member }, 'outbox drain connected; catching up');
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
        const seen = wakeup.count;
        const wait = await cycle(c);
        if (closing) {
          await flush(c);
          return;
        }
        await wakeup.nap(wait, seen);
      } catch (error) {
        if (closing && stopController.signal.aborted) return;
        // Whatever failed, the state may no longer match the database: start over from it.
        logger.error(
          { err: errorMessage(error) },
          'outbox drain lost its connection or failed; reconnecting and catching up (events in flight may be delivered again)',
        );
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
        enabled,
        connected: client !== undefined,
        listening: listener?.connected ?? false,
        partitions: membership.owned(),
        inFlight: [...ledger.entryIds()],
        floor: bound.floor,
        asleep: idle === 'asleep',
      };
    },
    start() {
      loop ??= run().catch((error) => logger.error({ err: errorMessage(error) }, 'outbox drain stopped unexpectedly'));
      return Promise.race([firstConnected, loop]);
    },
    async stopIntake() {
      intake = false;
      wakeup.wake();
    },
    close(deadline = Date.now() + 10_000) {
      closed ??= (async () => {
        intake = false;
        closing = true;
        // Not connected: nothing to write, and a reconnect wait must not hold up the stop.
        if (!client) stopController.abort();
        wakeup.wake();
        // The loop writes the last acknowledgements and returns; a dead database must not hold the
        // stop past its deadline (a moment is kept for disconnecting).
        const finished = (await settleBy(loop, deadline - 200)).state !== 'late';
        stopController.abort();
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
