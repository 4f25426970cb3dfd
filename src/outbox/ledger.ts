import type { Delivery, DeliveryReceiver } from '../dispatcher/index.js';
import type { Envelope } from '../envelope.js';
import { errorMessage } from '../errors.js';

/**
 * The delivery ledger of a durable source: which events are in memory, which sink has which of them,
 * and what must be written so that nothing is lost and nothing is kept longer than needed. Pure state:
 * no database, no timers, no logging — the source's loop does the I/O around it (src/source/outbox.ts)
 * and this is unit-tested alone (test/unit/outbox-ledger.test.ts).
 *
 * Words:
 * - An **entry** is one position of the source's queue (an outbox row: one event, or a statement's
 *   chunk of them), identified by a number that grows in queue order. It may go (the source deletes the
 *   row, or moves its slot past it) once every (event, sink) pair of it is **settled**: delivered,
 *   dead-lettered, or copied into that sink's own durable backlog.
 * - A **job** is one event on its way to one sink. Live jobs come from an entry; backlog jobs from the
 *   sink's backlog rows (`seq`).
 * - A sink is **live** (fed from entries) or **backlogged** (more than `sinkBuffer` of its events in
 *   memory, or events waiting in its backlog: its new events are spilled to the backlog and read back
 *   in order as it has room, so its order holds and memory stays bounded).
 * - An event a sink still holds `checkpointAfter` after its entry was read is **checkpointed**: copied
 *   to the sink's backlog (the job stays live), so the entry can go and a crash repeats it for that
 *   sink only.
 * - What must be written is gathered in a **batch** (spills, dead letters, done backlog rows, done
 *   entries): take() hands it out, committed() applies what the write did.
 *
 * Every job and entry carries the ledger's generation: reset() (the source lost its connection, so the
 * database is the truth again) makes every outcome of an older generation irrelevant.
 */
export interface LedgerOptions {
  readonly sinks: readonly string[];
  /** Events one sink may hold in memory before it is backlogged. */
  readonly sinkBuffer: number;
  /** How long a sink may hold a live event before it is checkpointed (ms). */
  readonly checkpointAfter: number;
  /** Key partitions: each entry and job belongs to one (the loop hands a partition over only when its load is 0). */
  readonly partitions: number;
}

/** What the ledger asks of its source; called synchronously, never re-entrantly. */
export interface LedgerHooks {
  /** Hand a job to its sink's dispatcher; its outcome comes back through job.delivered(). */
  deliver(job: Job): void;
  /** A sink switched between live and backlogged. */
  modeChanged?(sink: string, mode: SinkMode, why: string): void;
  /** An event of this sink was queued for its backlog (spilled or checkpointed). */
  spilled?(sink: string): void;
  /** An outcome arrived (the loop may want to write it soon). */
  outcome?(): void;
}

export type SinkMode = 'live' | 'backlog';

/** One event on its way to one sink; the dispatcher's receiver of its outcome. */
export interface Job extends DeliveryReceiver {
  readonly sink: string;
  readonly envelope: Envelope;
  readonly part: number;
}

/**
 * An event for a sink's backlog. A checkpoint copy (`job` set) is of a live job of entry `entry`: if the
 * backlog refuses it, that entry must stay (the source must not let it go in the same write).
 */
export interface Spill {
  readonly sink: string;
  readonly part: number;
  readonly envelope: Envelope;
  readonly job?: Job;
  readonly entry?: number;
}
export interface DeadLetter {
  readonly sink: string;
  readonly envelope: Envelope;
  readonly attempts: number;
  readonly code: string;
  readonly error: string;
}

/** What must be written now, in one statement when possible. */
export interface Batch {
  readonly spills: readonly Spill[];
  readonly dead: readonly DeadLetter[];
  /** Backlog rows (seq) whose event is settled: delete them. */
  readonly doneBacklog: readonly number[];
  /** Entries whose every (event, sink) pair is settled: the source may let them go. */
  readonly doneEntries: readonly number[];
}

export interface Ledger {
  /** Events of the entries in memory. */
  readonly entryEvents: number;
  /** Something is waiting to be written (take() would hand out a batch). */
  readonly dirty: boolean;
  /** Ids of the entries in memory, in queue order. */
  entryIds(): IterableIterator<number>;
  /** Jobs, spills and entries of a partition not yet written away: it can be handed over at 0. */
  load(part: number): number;
  mode(sink: string): SinkMode;
  /** Room for more backlog events of a backlogged sink (0 for a live one). */
  backlogRoom(sink: string): number;
  /** The last backlog row read for a sink (read on from there). */
  backlogCursor(sink: string): number;
  /**
   * An entry read from the queue: its events, each with the sinks it is routed to. A sink the ledger
   * does not know (a dead letter sent back to a sink no longer configured) gets a dead letter.
   */
  admit(entry: { id: number; part: number; readAt: number }, events: readonly { envelope: Envelope; sinks: readonly string[] }[]): void;
  /** A backlog row read for a backlogged sink; false when it is in memory already. */
  admitBacklog(sink: string, seq: number, part: number, envelope: Envelope): boolean;
  /** A backlog read for `sink` came back short of `asked`: everything queued so far is in memory. */
  backlogDrained(sink: string): void;
  /** Newly owned partitions: these sinks have backlog rows in them. */
  backlogFound(sinks: readonly string[]): void;
  /** Checkpoints what is due at `now`. */
  checkpoint(now: number): void;
  /** When the next checkpoint is due, in ms from `now` (Infinity: no entry in memory). */
  nextCheckpoint(now: number): number;
  /** The batch to write now (undefined: nothing), handed out once. */
  take(): Batch | undefined;
  /**
   * The batch was written. `stored`: the backlog seq each spill got (by spill index; undefined for a
   * spill the backlog refused — a checkpoint copy stays live, any other one must be in `dead`).
   */
  committed(batch: Batch, stored: readonly (number | undefined)[]): void;
  /** Everything in memory is void: the source starts over from the database. */
  reset(): void;
}

interface SinkState {
  readonly name: string;
  mode: SinkMode;
  /** Its jobs in the dispatcher, every generation (outcomes of older ones still come back). */
  mem: number;
  cursor: number;
  /** Backlog rows (seq) in memory, until their removal is written. */
  readonly memSeqs: Set<number>;
}

interface Entry {
  readonly id: number;
  readonly part: number;
  readonly events: number;
  readonly readAt: number;
  /** (event, sink) pairs not yet settled nor queued for writing. */
  open: number;
  readonly jobs: LiveJob[];
  done: boolean;
}

class LiveJob implements Job {
  /** Settled (or void): later outcomes are ignored. */
  settled = false;
  /** Its backlog row: fed from there, or checkpointed. */
  seq: number | undefined;
  /** Checkpoint copy queued or being written; refused: the backlog would not take it (it stays live). */
  ckpt: 'queued' | 'writing' | 'refused' | undefined;
  /** The outcome that arrived while its checkpoint copy was being written. */
  outcome: Delivery | undefined;
  constructor(
    private readonly ledger: LedgerState,
    readonly state: SinkState,
    readonly envelope: Envelope,
    readonly part: number,
    readonly gen: number,
    readonly entry: Entry | undefined,
  ) {}
  get sink(): string {
    return this.state.name;
  }
  delivered(d: Delivery): void {
    this.ledger.outcome(this, d);
  }
}

const MAX_ERROR_TEXT = 2000;

interface LedgerState {
  outcome(job: LiveJob, d: Delivery): void;
}

export function createLedger(options: LedgerOptions, hooks: LedgerHooks): Ledger {
  const { sinkBuffer, checkpointAfter } = options;
  const sinks = new Map<string, SinkState>(options.sinks.map((name) => [name, { name, mode: 'live', mem: 0, cursor: 0, memSeqs: new Set() }]));
  const entries = new Map<number, Entry>();
  const partLoad = new Int32Array(options.partitions);
  let entryEvents = 0;
  let gen = 0;
  let spills: Spill[] = [];
  let dead: DeadLetter[] = [];
  let doneBacklog: LiveJob[] = [];
  let doneEntries: Entry[] = [];
  /** Spill index of each queued checkpoint copy, so a settle before the write can cancel it. */
  let queuedCopies = new Map<LiveJob, number>();

  const self: LedgerState = { outcome };

  function setMode(sink: SinkState, mode: SinkMode, why: string): void {
    if (sink.mode === mode) return;
    sink.mode = mode;
    hooks.modeChanged?.(sink.name, mode, why);
  }

  function deliver(job: LiveJob): void {
    job.state.mem++;
    hooks.deliver(job);
  }

  function outcome(job: LiveJob, d: Delivery): void {
    job.state.mem--;
    hooks.outcome?.();
    if (job.gen !== gen || job.settled) return;
    if (d.status === 'aborted' || d.status === 'dropped') {
      // Stopped before delivery: its row stays, the next run delivers it.
      job.settled = true;
      return;
    }
    if (job.ckpt === 'writing') {
      job.outcome = d;
      return;
    }
    settle(job, d);
  }

  function settle(job: LiveJob, d: Delivery): void {
    job.settled = true;
    if (d.status === 'dead') {
      dead.push({
        sink: job.sink,
        envelope: job.envelope,
        attempts: d.attempts,
        code: d.error.code,
        error: errorMessage(d.error).slice(0, MAX_ERROR_TEXT),
      });
    }
    if (job.ckpt === 'queued') {
      // Its backlog copy is not written yet, and not needed any more.
      const at = queuedCopies.get(job);
      if (at !== undefined) spills[at] = CANCELLED;
      queuedCopies.delete(job);
      job.ckpt = undefined;
      partLoad[job.part]!--;
      return;
    }
    if (job.seq !== undefined) {
      doneBacklog.push(job);
      return;
    }
    const entry = job.entry as Entry;
    entry.open--;
    if (entry.open === 0) entryDone(entry);
  }

  function entryDone(entry: Entry): void {
    if (entry.done) return;
    entry.done = true;
    doneEntries.push(entry);
  }

  function spill(sink: SinkState, part: number, envelope: Envelope, job?: LiveJob): void {
    if (job) queuedCopies.set(job, spills.length);
    spills.push(job ? { sink: sink.name, part, envelope, job, entry: (job.entry as Entry).id } : { sink: sink.name, part, envelope });
    hooks.spilled?.(sink.name);
  }

  return {
    get entryEvents() {
      return entryEvents;
    },
    get dirty() {
      return spills.some((x) => x !== CANCELLED) || dead.length + doneBacklog.length + doneEntries.length > 0;
    },
    entryIds: () => entries.keys(),
    load: (part) => partLoad[part] as number,
    mode: (sink) => (sinks.get(sink) as SinkState).mode,
    backlogRoom(name) {
      const sink = sinks.get(name) as SinkState;
      return sink.mode === 'backlog' ? Math.max(0, sinkBuffer - sink.mem) : 0;
    },
    backlogCursor: (name) => (sinks.get(name) as SinkState).cursor,

    admit(at, events) {
      const entry: Entry = { id: at.id, part: at.part, events: events.length, readAt: at.readAt, open: 0, jobs: [], done: false };
      entries.set(entry.id, entry);
      entryEvents += entry.events;
      partLoad[entry.part]!++;
      for (const { envelope, sinks: names } of events) {
        for (const name of names) {
          const sink = sinks.get(name);
          if (!sink) {
            dead.push({ sink: name, envelope, attempts: 0, code: 'SINK_UNKNOWN', error: `sink "${name}" is not in the config` });
            continue;
          }
          if (sink.mode === 'live' && sink.mem < sinkBuffer) {
            const job = new LiveJob(self, sink, envelope, entry.part, gen, entry);
            entry.jobs.push(job);
            entry.open++;
            deliver(job);
          } else {
            setMode(sink, 'backlog', `more than ${sinkBuffer} events waiting (outbox.sinkBuffer)`);
            spill(sink, entry.part, envelope);
          }
        }
      }
      if (entry.open === 0) entryDone(entry);
    },

    admitBacklog(name, seq, part, envelope) {
      const sink = sinks.get(name) as SinkState;
      if (seq > sink.cursor) sink.cursor = seq;
      if (sink.memSeqs.has(seq)) return false;
      const job = new LiveJob(self, sink, envelope, part, gen, undefined);
      job.seq = seq;
      sink.memSeqs.add(seq);
      partLoad[part]!++;
      deliver(job);
      return true;
    },

    backlogDrained(name) {
      // Spills are written before a backlog read, and admitting comes after it: later events can go
      // straight to the sink again, behind these.
      setMode(sinks.get(name) as SinkState, 'live', 'caught up');
    },

    backlogFound(names) {
      for (const name of names) {
        const sink = sinks.get(name);
        if (!sink) continue;
        setMode(sink, 'backlog', 'events are waiting in its durable backlog');
        sink.cursor = 0;
      }
    },

    nextCheckpoint(now) {
      const oldest = entries.values().next().value as Entry | undefined;
      return oldest ? oldest.readAt + checkpointAfter - now : Number.POSITIVE_INFINITY;
    },

    checkpoint(now) {
      for (const entry of entries.values()) {
        if (now - entry.readAt < checkpointAfter) return;
        if (entry.done) continue;
        for (const job of entry.jobs) {
          if (job.settled || job.ckpt || job.seq !== undefined) continue;
          job.ckpt = 'queued';
          partLoad[job.part]!++;
          spill(job.state, job.part, job.envelope, job);
          entry.open--;
        }
        if (entry.open === 0) entryDone(entry);
      }
    },

    take() {
      const live = spills.filter((s) => s !== CANCELLED);
      if (live.length + dead.length + doneBacklog.length + doneEntries.length === 0) {
        spills = [];
        queuedCopies = new Map();
        return undefined;
      }
      for (const s of live) if (s.job) (s.job as LiveJob).ckpt = 'writing';
      const batch: TakenBatch = {
        spills: live,
        dead,
        doneBacklog: doneBacklog.map((j) => j.seq as number),
        doneEntries: doneEntries.map((e) => e.id),
        backlogJobs: doneBacklog,
        entries: doneEntries,
      };
      spills = [];
      dead = [];
      doneBacklog = [];
      doneEntries = [];
      queuedCopies = new Map();
      return batch;
    },

    committed(batch, stored) {
      const taken = batch as TakenBatch;
      taken.spills.forEach((s, i) => {
        const job = s.job as LiveJob | undefined;
        if (!job || job.gen !== gen) return;
        const seq = stored[i];
        if (seq === undefined) {
          // The backlog refused the copy: the job stays live and its entry waits for its outcome
          // (the source kept it: see Spill).
          job.ckpt = 'refused';
          partLoad[job.part]!--;
          const entry = job.entry as Entry;
          entry.open++;
          entry.done = false;
          if (job.outcome) {
            const d = job.outcome;
            job.outcome = undefined;
            settle(job, d);
          }
          return;
        }
        job.ckpt = undefined;
        job.seq = seq;
        job.state.memSeqs.add(seq);
        if (job.outcome) settle(job, job.outcome);
      });
      for (const job of taken.backlogJobs) {
        if (job.gen !== gen) continue;
        job.state.memSeqs.delete(job.seq as number);
        partLoad[job.part]!--;
      }
      for (const entry of taken.entries) {
        if (entries.get(entry.id) !== entry || !entry.done) continue;
        entries.delete(entry.id);
        entryEvents -= entry.events;
        partLoad[entry.part]!--;
      }
    },

    reset() {
      gen++;
      entries.clear();
      entryEvents = 0;
      spills = [];
      dead = [];
      doneBacklog = [];
      doneEntries = [];
      queuedCopies = new Map();
      partLoad.fill(0);
      for (const sink of sinks.values()) {
        sink.memSeqs.clear();
        sink.cursor = 0;
        if (sink.mode !== 'live') setMode(sink, 'live', RESET);
      }
    },
  };
}

/** The ledger's own view of a batch it handed out (the jobs and entries behind the numbers). */
interface TakenBatch extends Batch {
  readonly backlogJobs: readonly LiveJob[];
  readonly entries: readonly Entry[];
}

/** The `why` of modeChanged when reset() makes every sink live again (nothing was caught up). */
export const RESET = 'starting over';

/** A queued checkpoint copy whose event settled before it was written. */
const CANCELLED: Spill = Object.freeze({ sink: '', part: -1, envelope: undefined as unknown as Envelope });
