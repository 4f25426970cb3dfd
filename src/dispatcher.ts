import { setMaxListeners } from 'node:events';
import pRetry from 'p-retry';
import type { Logger } from 'pino';
import type { DispatchOptions } from './config.js';
import type { Envelope } from './envelope.js';
import { classifyError, errorMessage, SidekickError, RetriableError } from './errors.js';
import type { Metrics } from './metrics.js';
import type { ItemOutcome, SendResult, Sink } from './sink.js';
import { sleep } from './wait.js';

/** What finally happened to one envelope at one sink. */
export type Delivery =
  | { readonly status: 'delivered'; readonly attempts: number }
  | { readonly status: 'dead'; readonly attempts: number; readonly error: SidekickError }
  /** Not delivered because the dispatcher stopped first: a durable source keeps it for next time. */
  | { readonly status: 'aborted'; readonly attempts: number }
  /** Refused at the door because `maxQueued` was reached (ephemeral sources only). */
  | { readonly status: 'dropped'; readonly attempts: 0 };

export interface Dispatcher {
  readonly sink: Sink;
  /**
   * Queues an envelope for this sink. Envelopes with the same ordering key are delivered one after
   * another in the order given; other keys flow concurrently. Never rejects.
   */
  deliver(envelope: Envelope, options?: { force?: boolean }): Promise<Delivery>;
  /**
   * deliver() for sources that hand over many events and keep a record of each:
   * `receiver.delivered(d)` runs exactly once, possibly before this returns (refused at the door) and
   * never re-entering it — a method, so the source needs no closure per event.
   */
  deliverTo(envelope: Envelope, receiver: DeliveryReceiver, options?: { force?: boolean }): void;
  /** Envelopes queued or in flight. */
  readonly size: number;
  /** Resolves when `size` is below the high-water mark (for sources that can wait). */
  waitForRoom(): Promise<void>;
  /** Stops taking work, waits up to `timeout` ms for what is queued, then aborts the rest. Idempotent. */
  stop(timeout: number): Promise<void>;
}

/** Who hears how an envelope's delivery ended (a method, so a source's own record can be it). */
export interface DeliveryReceiver { delivered(d: Delivery): void }

/** One queued envelope: a node of its lane's list. */
interface Item {
  readonly envelope: Envelope;
  readonly receiver: DeliveryReceiver;
  /** Arrival number at this dispatcher: the lower, the older the event (retries go oldest first). */
  readonly order: number;
  next: Item | undefined;
}

/** A run of consecutive envelopes of one lane, sent together and never split across batches. */
interface Waiting { readonly envelopes: readonly Envelope[]; done(o: readonly ItemOutcome[]): void }

/** One envelope's retry, due now: it waits for a send() slot ahead of every first attempt. */
interface Retry extends Waiting { readonly order: number }

/**
 * The queued envelopes of one ordering key (the channel and the key), oldest first. It is its own
 * Waiting entry while its next run waits for (or is in) a send() slot: one object per lane, no
 * closure per run (this is the hot path: one lane per event when every event has its own key).
 */
class Lane implements Waiting {
  head: Item | undefined;
  tail: Item | undefined;
  length = 0;
  /**
   * The envelopes of the run being sent (the first `envelopes.length` items). Replaced as soon as
   * the next run is queued, which done() may do at once: read it before calling done().
   */
  envelopes: readonly Envelope[] = [];
  constructor(
    readonly channel: string,
    readonly key: string | undefined,
    private readonly ran: (lane: Lane, outcomes: readonly ItemOutcome[]) => void,
  ) {}

  push(item: Item): void {
    if (this.tail) this.tail.next = item;
    else this.head = item;
    this.tail = item;
    this.length++;
  }

  shift(): Item {
    const item = this.head as Item;
    this.head = item.next;
    if (!this.head) this.tail = undefined;
    this.length--;
    return item;
  }

  done(outcomes: readonly ItemOutcome[]): void {
    this.ran(this, outcomes);
  }
}

/** The usual outcome, shared (never mutated). */
const DELIVERED_FIRST_TIME: Delivery = Object.freeze({ status: 'delivered', attempts: 1 });

const jitter = (ms: number) => ms * (0.85 + Math.random() * 0.3);
/**
 * Failed batches in a row (no success between them) before the whole sink backs off. An isolated
 * failure is the event's own business (its retry backs off); a streak means the destination is down.
 * An unreachable destination (connection refused) needs no streak to tell.
 */
const FAILING_STREAK = 3;

/**
 * Per-sink delivery: one FIFO lane per ordering key (so a retrying event holds back only later
 * events of its own key), a batcher that gathers the heads of all lanes into `send()` calls with at
 * most `concurrency` in flight, per-event retries through p-retry (exponential, randomised), and a
 * sink-wide pause while every attempt fails, so a dead endpoint is not hammered: one request probes
 * it after each pause, and the first success restores full concurrency. Due retries are sent before
 * first attempts, oldest event first, so the probe moves the oldest retrying event on and a receiver
 * that fails each event's first attempts still gets every event. `Retry-After` holds the
 * whole sink (capped by `retry.maxDelay`).
 */
export function createDispatcher(params: {
  sink: Sink;
  options: DispatchOptions;
  logger: Logger;
  metrics?: Metrics;
  now?: () => number;
}): Dispatcher {
  const { sink, options, metrics } = params;
  const logger = params.logger.child({ sink: sink.name });
  const now = params.now ?? Date.now;
  const { retry, concurrency, batch, maxQueued } = options;
  const controller = new AbortController();
  // Every in-flight send() and every retry delay listens on this one signal: hundreds at once is
  // normal here, not a leak.
  setMaxListeners(0, controller.signal);
  /** The lanes: per channel, per key (no key: the channel's own lane, in `keyless`). */
  const lanes = new Map<string, Map<string, Lane>>();
  const keyless = new Map<string, Lane>();
  /** Lanes created since the last microtask: they start together, once a burst of deliver() calls has joined them. */
  let fresh: Lane[] = [];
  /**
   * Runs waiting for a send() slot, oldest first, from index `waitingHead` on. A head index instead
   * of shift(): with thousands of lanes waiting, shifting the array on every send cost more than
   * the send itself.
   */
  let waiting: Waiting[] = [];
  let waitingHead = 0;
  /**
   * Retries that are due, as a binary min-heap on the event's arrival `order`. flush() serves them
   * before `waiting`: a retry that is due is sent before any first attempt, oldest event first, so
   * the single probe of a paused sink moves the oldest retrying event on instead of starting yet
   * another fresh one (which starved every retry while each event's first attempts failed).
   */
  const retries: Retry[] = [];
  /** Envelopes in `waiting` and `retries`. */
  let waitingCount = 0;
  /** Events handed to deliver() so far: the next one's arrival `order`. */
  let arrivals = 0;
  let size = 0;
  let inFlight = 0;
  let flushScheduled = false;
  let lingerTimer: NodeJS.Timeout | undefined;
  let pausedUntil = 0;
  /** Until when the destination asked us to wait (Retry-After); a success elsewhere does not cancel it. */
  let askedUntil = 0;
  let consecutiveFailures = 0;
  /** Batches in a row that failed retriably, with no success in between. */
  let failStreak = 0;
  /**
   * Bumped each time the sink-wide backoff grows. A batch sent before the latest bump that fails
   * too is the same outage seen again (32 requests in flight all fail at once), not a new failed
   * probe: it must not grow the backoff further.
   */
  let generation = 0;
  let stopping: Promise<void> | undefined;
  const idleWaiters: (() => void)[] = [];
  const roomWaiters: (() => void)[] = [];
  const highWater = Math.max(1, Math.floor(maxQueued * 0.8));
  // The latency series, looked up once (a labels object per event costs more than the event's send);
  // the queue size and the delivered count are read when /metrics is scraped.
  const latency = metrics?.latency.labels(sink.name);
  let delivered = 0;
  metrics?.watchSink(sink.name, { queued: () => size, delivered: () => delivered });

  function setSize(delta: number) {
    size += delta;
    if (size < highWater) for (const w of roomWaiters.splice(0)) w();
    if (size === 0) for (const w of idleWaiters.splice(0)) w();
  }

  // A sink that delivers a batch in order may take a run of one key's envelopes at once; any other
  // sink gets one envelope per key per batch, so that order never depends on the sink.
  const runLength = sink.ordered ? batch.size : 1;

  // ---- batcher: runs from the heads of lanes → send() calls -----------------------------------
  /** Queues the retry of an event (arrival `order`) ahead of every first attempt; resolves with its outcome. */
  function resubmit(order: number, envelope: Envelope): Promise<ItemOutcome> {
    return new Promise((resolve) => {
      pushRetry({ order, envelopes: [envelope], done: (o) => resolve(o[0] as ItemOutcome) });
      waitingCount++;
      schedule();
    });
  }

  function pushRetry(r: Retry): void {
    let i = retries.push(r) - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const p = retries[parent] as Retry;
      if (p.order <= r.order) break;
      retries[i] = p;
      i = parent;
    }
    retries[i] = r;
  }

  /** Takes the due retry of the oldest event. */
  function popRetry(): Retry {
    const top = retries[0] as Retry;
    const last = retries.pop() as Retry;
    const n = retries.length;
    if (n > 0) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= n) break;
        const r = l + 1;
        const c = r < n && (retries[r] as Retry).order < (retries[l] as Retry).order ? r : l;
        if ((retries[c] as Retry).order >= last.order) break;
        retries[i] = retries[c] as Retry;
        i = c;
      }
      retries[i] = last;
    }
    return top;
  }

  /** Queues a lane's next run (the lane is its own Waiting entry). */
  function enqueueLane(lane: Lane): void {
    waiting.push(lane);
    waitingCount += lane.envelopes.length;
    schedule();
  }

  /**
   * While the sink is failing as a whole, only one batch at a time probes the destination (a
   * half-open circuit); the first success restores full concurrency.
   */
  function limit(): number {
    return consecutiveFailures > 0 ? 1 : concurrency;
  }

  function waitingRuns(): number {
    return retries.length + waiting.length - waitingHead;
  }

  /** The run flush() takes next: a due retry (oldest event first), else the oldest waiting run. */
  function nextRun(): Waiting {
    return retries.length > 0 ? retries[0] as Retry : waiting[waitingHead] as Waiting;
  }

  function takeNext(): Waiting {
    return retries.length > 0 ? popRetry() : takeRun();
  }

  /** Takes the oldest waiting run, compacting the array now and then (amortised O(1)). */
  function takeRun(): Waiting {
    const run = waiting[waitingHead] as Waiting;
    waiting[waitingHead++] = undefined as unknown as Waiting;
    if (waitingHead === waiting.length) {
      waiting = [];
      waitingHead = 0;
    } else if (waitingHead > 1024 && waitingHead * 2 > waiting.length) {
      waiting = waiting.slice(waitingHead);
      waitingHead = 0;
    }
    return run;
  }

  function schedule(): void {
    if (waitingRuns() === 0 || inFlight >= limit()) return;
    const wait = Math.max(pausedUntil, askedUntil) - now();
    if (wait > 0) {
      if (!lingerTimer) {
        lingerTimer = setTimeout(() => { lingerTimer = undefined; schedule(); }, wait);
        lingerTimer.unref();
      }
      return;
    }
    if (waitingCount >= batch.size || batch.linger === 0) {
      // Let the current burst of lanes submit before sending, so batches fill up.
      if (!flushScheduled) {
        flushScheduled = true;
        setImmediate(() => { flushScheduled = false; flush(); });
      }
    } else if (!lingerTimer) {
      lingerTimer = setTimeout(() => { lingerTimer = undefined; flush(); }, batch.linger);
      lingerTimer.unref();
    }
  }

  function flush(): void {
    while (waitingRuns() > 0 && inFlight < limit() && Math.max(pausedUntil, askedUntil) <= now()) {
      const groups: Waiting[] = [];
      let n = 0;
      while (waitingRuns() > 0 && (groups.length === 0 || n + nextRun().envelopes.length <= batch.size)) {
        const g = takeNext();
        groups.push(g);
        n += g.envelopes.length;
      }
      waitingCount -= n;
      inFlight++;
      sendBatch(groups, generation);
    }
    schedule();
  }

  function unreachable(outcomes: readonly ItemOutcome[]): boolean {
    return outcomes.every((o) => !o.ok && o.error instanceof RetriableError && o.error.unavailable);
  }

  /** Sends a batch; its outcomes go to sent() (callbacks, not async/await: one per event here). */
  function sendBatch(groups: Waiting[], sentIn: number): void {
    const items = groups.length === 1 ? (groups[0] as Waiting).envelopes : groups.flatMap((g) => g.envelopes);
    let pending: Promise<SendResult>;
    try {
      // (Promise.resolve: the sink's own promise as it is; anything else, e.g. a plain array, still works.)
      pending = Promise.resolve(sink.send(items, controller.signal));
    } catch (error) {
      pending = Promise.reject(error);
    }
    pending.then(
      (outcomes) => sent(groups, sentIn, items, outcomes),
      (error) => sent(groups, sentIn, items, undefined, error),
    );
  }

  function sent(groups: Waiting[], sentIn: number, items: readonly Envelope[], result: SendResult | undefined, error?: unknown): void {
    inFlight--;
    try {
      settleBatch(groups, sentIn, items, result, error);
    } finally {
      schedule();
    }
  }

  function settleBatch(groups: Waiting[], sentIn: number, items: readonly Envelope[], result: SendResult | undefined, error: unknown): void {
    let outcomes: readonly ItemOutcome[];
    if (result !== undefined && result.length !== items.length) {
      error = new TypeError(`sink ${sink.name} returned ${result.length} outcomes for ${items.length} envelopes`);
    }
    if (result === undefined || error !== undefined) {
      const failure: ItemOutcome = { ok: false, error: classifyError(error) };
      outcomes = items.map(() => failure);
    } else {
      outcomes = result;
    }
    const anyOk = outcomes.some((o) => o.ok);
    const allRetriable = outcomes.every((o) => !o.ok && o.error.retriable);
    // The longest Retry-After the destination asked for in this batch, capped by maxDelay.
    let asked = 0;
    for (const o of outcomes) {
      if (!o.ok && o.error instanceof RetriableError && o.error.retryAfterMs) asked = Math.max(asked, o.error.retryAfterMs);
    }
    asked = Math.min(asked, retry.maxDelay);
    // Retry-After speaks for the destination as a whole (rate limit, maintenance): hold every lane.
    if (asked > 0) askedUntil = Math.max(askedUntil, now() + asked);
    if (anyOk) {
      if (consecutiveFailures > 0) logger.info({ failures: consecutiveFailures }, 'sink recovered');
      consecutiveFailures = 0;
      failStreak = 0;
      pausedUntil = 0;
    } else if (allRetriable && ++failStreak >= (unreachable(outcomes) ? 1 : FAILING_STREAK) && sentIn === generation) {
      // The destination is failing as a whole: back the sink off (exponential, jittered, capped),
      // then probe again.
      generation++;
      consecutiveFailures++;
      const first = outcomes[0] as { error: SidekickError };
      const backoff = Math.min(retry.maxDelay, retry.initialDelay * 2 ** Math.min(consecutiveFailures - 1, 30));
      pausedUntil = Math.max(pausedUntil, now() + jitter(backoff));
      if (consecutiveFailures === 1 || consecutiveFailures % 10 === 0) {
        logger.warn({ failures: consecutiveFailures, backoffMs: Math.round(Math.max(asked, backoff)), err: first.error.message }, 'sink failing; backing off');
      }
    }
    if (groups.length === 1) {
      (groups[0] as Waiting).done(outcomes);
      return;
    }
    let at = 0;
    for (const g of groups) {
      // The length first: done() may move a lane on to its next run (another length) at once.
      const n = g.envelopes.length;
      g.done(outcomes.slice(at, at + n));
      at += n;
    }
  }

  // ---- lanes: per-key order and per-event retries ----------------------------------------------
  /** Retries one envelope whose first attempt (`first`) failed retriably, until delivered or given up. */
  async function attempt(item: Item, first: ItemOutcome): Promise<Delivery> {
    const { envelope, order } = item;
    let attempts = 0;
    /** Failures that count against `retry.attempts` (an unreachable destination does not). */
    let counted = 0;
    let last: SidekickError | undefined;
    const born = Date.parse(envelope.at);
    try {
      await pRetry(async () => {
        attempts++;
        const outcome = attempts === 1 ? first : await resubmit(order, envelope);
        if (outcome.ok) return;
        last = outcome.error;
        metrics?.failed.inc({ sink: sink.name, retriable: String(outcome.error.retriable) });
        // A fatal error ends the retries at once; pRetry rethrows it because it is not retriable here.
        throw outcome.error;
      }, {
        // The attempt budget is enforced in shouldRetry, where unreachable-destination failures are
        // exempt; maxAge bounds those instead.
        retries: Number.MAX_SAFE_INTEGER,
        factor: 2,
        minTimeout: retry.initialDelay,
        maxTimeout: retry.maxDelay,
        randomize: true,
        unref: true,
        signal: controller.signal,
        shouldConsumeRetry: ({ error }) => !(error instanceof RetriableError && error.unavailable),
        shouldRetry: ({ error }) => {
          if (!(error instanceof SidekickError) || !error.retriable) return false;
          if (!(error instanceof RetriableError && error.unavailable)) counted++;
          if (counted >= retry.attempts) return false;
          if (retry.maxAge !== undefined && Number.isFinite(born) && now() - born >= retry.maxAge) return false;
          metrics?.retried.inc({ sink: sink.name });
          logger.debug({ id: envelope.id, attempts, err: error.message }, 'delivery failed; will retry');
          return true;
        },
        onFailedAttempt: async ({ error, retriesConsumed }) => {
          // Honour Retry-After (capped by maxDelay): the next attempt comes no sooner than asked.
          // p-retry then waits at least initialDelay·2^retriesConsumed (capped) for an attempt that
          // consumes a retry, so sleep only for what that wait does not already cover.
          if (!(error instanceof RetriableError) || !error.retryAfterMs || error.retryAfterMs <= 0) return;
          const asked = Math.min(error.retryAfterMs, retry.maxDelay);
          const covered = error.unavailable ? 0 : Math.min(retry.initialDelay * 2 ** Math.min(retriesConsumed, 30), retry.maxDelay);
          const last = (error.unavailable ? counted : counted + 1) >= retry.attempts; // no retry follows: do not wait
          if (asked > covered && !last) await sleep(asked - covered, controller.signal);
        },
      });
      return { status: 'delivered', attempts };
    } catch (error) {
      if (controller.signal.aborted) return { status: 'aborted', attempts };
      return { status: 'dead', attempts, error: last ?? classifyError(error) };
    }
  }

  /**
   * Sends the lane's next run (callbacks, not async/await: one of these per event is the hot path).
   * On the first retriable failure in a run, that envelope is retried alone (attempt); the later
   * envelopes of the run go out again after it (even if the sink took them), so a key's order holds;
   * at-least-once allows the duplicate.
   */
  function runLane(lane: Lane): void {
    if (lane.length === 0) {
      dropLane(lane);
      return;
    }
    if (controller.signal.aborted) {
      while (lane.length > 0) finish(lane.shift(), { status: 'aborted', attempts: 0 });
      dropLane(lane);
      return;
    }
    const n = Math.min(runLength, lane.length);
    let item = lane.head as Item;
    if (n === 1) {
      lane.envelopes = [item.envelope];
    } else {
      const run: Envelope[] = [];
      for (let i = 0; i < n; i++, item = item.next as Item) run.push(item.envelope);
      lane.envelopes = run;
    }
    enqueueLane(lane);
  }

  function ranLane(lane: Lane, outcomes: readonly ItemOutcome[]): void {
    const n = lane.envelopes.length;
    let i = 0;
    for (; i < n; i++) {
      const o = outcomes[i] as ItemOutcome;
      if (o.ok) {
        finish(lane.shift(), DELIVERED_FIRST_TIME);
      } else if (controller.signal.aborted) {
        // Stopping (the failure may be the stop itself): not the event's fault; its source keeps it.
        break;
      } else if (!o.error.retriable) {
        metrics?.failed.inc({ sink: sink.name, retriable: 'false' });
        finish(lane.shift(), { status: 'dead', attempts: 1, error: o.error });
      } else {
        break;
      }
    }
    if (i === n || controller.signal.aborted) {
      runLane(lane);
      return;
    }
    const head = lane.head as Item;
    void attempt(head, outcomes[i] as ItemOutcome).then((result) => {
      lane.shift();
      finish(head, result);
      runLane(lane);
    });
  }

  function finish(item: Item, result: Delivery): void {
    record(item.envelope, result);
    item.receiver.delivered(result);
    setSize(-1);
  }

  function dropLane(lane: Lane): void {
    if (lane.key === undefined) {
      keyless.delete(lane.channel);
      return;
    }
    const byKey = lanes.get(lane.channel);
    if (!byKey) return;
    byKey.delete(lane.key);
    if (byKey.size === 0) lanes.delete(lane.channel);
  }

  function startFresh(): void {
    const started = fresh;
    fresh = [];
    for (const lane of started) runLane(lane);
  }

  /** The last `at` parsed: the events of one transaction share it. */
  let lastAt = '';
  let lastBorn = Number.NaN;
  function record(envelope: Envelope, result: Delivery): void {
    if (result.status === 'delivered') {
      delivered++;
      if (latency) {
        if (envelope.at !== lastAt) {
          lastAt = envelope.at;
          lastBorn = Date.parse(envelope.at);
        }
        const born = lastBorn;
        if (Number.isFinite(born)) latency.observe(Math.max(0, now() - born) / 1000);
      }
    } else if (result.status === 'dead') {
      metrics?.dead.inc({ sink: sink.name });
      logger.error({ id: envelope.id, channel: envelope.channel, attempts: result.attempts, code: result.error.code, err: errorMessage(result.error) },
        'delivery failed for good; the event goes to the dead letters (its source says where it is kept)');
    }
  }

  let droppedLogged = 0;
  function deliverTo(envelope: Envelope, receiver: DeliveryReceiver, opts?: { force?: boolean }): void {
    if (stopping) return receiver.delivered({ status: 'aborted', attempts: 0 });
    if (size >= maxQueued && !opts?.force) {
      metrics?.dropped.inc({ sink: sink.name });
      const t = now();
      if (t - droppedLogged > 5_000) {
        droppedLogged = t;
        logger.error({ id: envelope.id, channel: envelope.channel, maxQueued }, 'sink queue full; event dropped (ephemeral events are at-most-once)');
      }
      return receiver.delivered({ status: 'dropped', attempts: 0 });
    }
    setSize(+1);
    const { channel, key } = envelope;
    let lane: Lane | undefined;
    let byKey: Map<string, Lane> | undefined;
    if (key === undefined) {
      lane = keyless.get(channel);
    } else {
      byKey = lanes.get(channel);
      lane = byKey?.get(key);
    }
    if (!lane) {
      lane = new Lane(channel, key, ranLane);
      if (key === undefined) {
        keyless.set(channel, lane);
      } else {
        if (!byKey) lanes.set(channel, byKey = new Map());
        byKey.set(key, lane);
      }
      // Start on a microtask, so that a burst of deliver() calls joins the lane first.
      if (fresh.length === 0) queueMicrotask(startFresh);
      fresh.push(lane);
    }
    lane.push({ envelope, receiver, order: arrivals++, next: undefined });
  }

  return {
    sink,
    get size() { return size; },
    deliver(envelope, opts) {
      return new Promise<Delivery>((resolve) => deliverTo(envelope, { delivered: resolve }, opts));
    },
    deliverTo,
    waitForRoom() {
      if (size < highWater) return Promise.resolve();
      return new Promise((resolve) => roomWaiters.push(resolve));
    },
    stop(timeout) {
      stopping ??= (async () => {
        if (size > 0) {
          let timer: NodeJS.Timeout | undefined;
          await Promise.race([
            new Promise<void>((resolve) => idleWaiters.push(resolve)),
            new Promise<void>((resolve) => { timer = setTimeout(resolve, timeout); }),
          ]);
          clearTimeout(timer);
        }
        controller.abort(new Error('dispatcher stopped'));
        if (lingerTimer) clearTimeout(lingerTimer);
        // Lanes still waiting in the batcher will never be sent: release them as aborted.
        const stopped: ItemOutcome = { ok: false, error: new SidekickError('STOPPED', 'dispatcher stopped') };
        while (waitingRuns() > 0) {
          const w = takeNext();
          w.done(w.envelopes.map(() => stopped));
        }
        waitingCount = 0;
        if (size > 0) await new Promise<void>((resolve) => idleWaiters.push(resolve));
        for (const w of roomWaiters.splice(0)) w();
      })();
      return stopping;
    },
  };
}

// sleep lives in src/wait.ts now; re-exported until src/source/outbox.ts imports it from there.
export { sleep } from './wait.js';
