import { setMaxListeners } from 'node:events';
import pRetry from 'p-retry';
import type { Logger } from 'pino';
import type { DispatchOptions } from './config.js';
import { orderingKey, type Envelope } from './envelope.js';
import { classifyError, errorMessage, SidekickError, RetriableError } from './errors.js';
import type { Metrics } from './metrics.js';
import type { ItemOutcome, Sink } from './sink.js';

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
   * deliver() with a callback instead of a promise, for sources that hand over many events: `done`
   * runs exactly once, possibly before this returns (refused at the door) and never re-entering it.
   */
  deliverThen(envelope: Envelope, done: (d: Delivery) => void, options?: { force?: boolean }): void;
  /** Envelopes queued or in flight. */
  readonly size: number;
  /** Resolves when `size` is below the high-water mark (for sources that can wait). */
  waitForRoom(): Promise<void>;
  /** Stops taking work, waits up to `timeout` ms for what is queued, then aborts the rest. Idempotent. */
  stop(timeout: number): Promise<void>;
}

interface Pending { readonly envelope: Envelope; readonly resolve: (d: Delivery) => void }
/** A run of consecutive envelopes of one lane, sent together and never split across batches. */
interface Waiting { readonly envelopes: readonly Envelope[]; readonly done: (o: readonly ItemOutcome[]) => void }

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
 * it after each pause, and the first success restores full concurrency. `Retry-After` holds the
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
  const lanes = new Map<string, Pending[]>();
  /**
   * Runs waiting for a send() slot, oldest first, from index `waitingHead` on. A head index instead
   * of shift(): with thousands of lanes waiting, shifting the array on every send cost more than
   * the send itself.
   */
  let waiting: Waiting[] = [];
  let waitingHead = 0;
  /** Envelopes in `waiting`. */
  let waitingCount = 0;
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
  /** Queues a run for a send() slot; `done` gets its outcomes (a callback: this is the hot path). */
  function enqueue(envelopes: readonly Envelope[], done: (o: readonly ItemOutcome[]) => void): void {
    waiting.push({ envelopes, done });
    waitingCount += envelopes.length;
    schedule();
  }

  function submit(envelopes: readonly Envelope[]): Promise<readonly ItemOutcome[]> {
    return new Promise((resolve) => enqueue(envelopes, resolve));
  }

  /**
   * While the sink is failing as a whole, only one batch at a time probes the destination (a
   * half-open circuit); the first success restores full concurrency.
   */
  function limit(): number {
    return consecutiveFailures > 0 ? 1 : concurrency;
  }

  function waitingRuns(): number {
    return waiting.length - waitingHead;
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
      while (waitingRuns() > 0 && (groups.length === 0 || n + (waiting[waitingHead] as Waiting).envelopes.length <= batch.size)) {
        const g = takeRun();
        groups.push(g);
        n += g.envelopes.length;
      }
      waitingCount -= n;
      inFlight++;
      void sendBatch(groups, generation).finally(() => {
        inFlight--;
        schedule();
      });
    }
    schedule();
  }

  function unreachable(outcomes: readonly ItemOutcome[]): boolean {
    return outcomes.every((o) => !o.ok && o.error instanceof RetriableError && o.error.unavailable);
  }

  async function sendBatch(groups: Waiting[], sentIn: number): Promise<void> {
    const items = groups.length === 1 ? (groups[0] as Waiting).envelopes : groups.flatMap((g) => g.envelopes);
    let outcomes: readonly ItemOutcome[];
    try {
      outcomes = await sink.send(items, controller.signal);
      if (outcomes.length !== items.length) {
        throw new TypeError(`sink ${sink.name} returned ${outcomes.length} outcomes for ${items.length} envelopes`);
      }
    } catch (error) {
      const failure: ItemOutcome = { ok: false, error: classifyError(error) };
      outcomes = items.map(() => failure);
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
      g.done(outcomes.slice(at, at + g.envelopes.length));
      at += g.envelopes.length;
    }
  }

  // ---- lanes: per-key order and per-event retries ----------------------------------------------
  /** Retries one envelope whose first attempt (`first`) failed retriably, until delivered or given up. */
  async function attempt(envelope: Envelope, first: ItemOutcome): Promise<Delivery> {
    let attempts = 0;
    /** Failures that count against `retry.attempts` (an unreachable destination does not). */
    let counted = 0;
    let last: SidekickError | undefined;
    const born = Date.parse(envelope.at);
    try {
      await pRetry(async () => {
        attempts++;
        const outcome = attempts === 1 ? first : (await submit([envelope]))[0] as ItemOutcome;
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
  function runLane(key: string, lane: Pending[]): void {
    if (lane.length === 0) {
      lanes.delete(key);
      return;
    }
    if (controller.signal.aborted) {
      while (lane.length > 0) finish(lane.shift() as Pending, { status: 'aborted', attempts: 0 });
      lanes.delete(key);
      return;
    }
    const n = Math.min(runLength, lane.length);
    const run = n === 1 ? [(lane[0] as Pending).envelope] : lane.slice(0, n).map((p) => p.envelope);
    enqueue(run, (outcomes) => ranLane(key, lane, n, outcomes));
  }

  function ranLane(key: string, lane: Pending[], n: number, outcomes: readonly ItemOutcome[]): void {
    let i = 0;
    for (; i < n; i++) {
      const o = outcomes[i] as ItemOutcome;
      if (o.ok) {
        finish(lane.shift() as Pending, DELIVERED_FIRST_TIME);
      } else if (controller.signal.aborted) {
        // Stopping (the failure may be the stop itself): not the event's fault; its source keeps it.
        break;
      } else if (!o.error.retriable) {
        metrics?.failed.inc({ sink: sink.name, retriable: 'false' });
        finish(lane.shift() as Pending, { status: 'dead', attempts: 1, error: o.error });
      } else {
        break;
      }
    }
    if (i === n || controller.signal.aborted) {
      runLane(key, lane);
      return;
    }
    const head = lane[0] as Pending;
    void attempt(head.envelope, outcomes[i] as ItemOutcome).then((result) => {
      lane.shift();
      finish(head, result);
      runLane(key, lane);
    });
  }

  function finish(pending: Pending, result: Delivery): void {
    record(pending.envelope, result);
    pending.resolve(result);
    setSize(-1);
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
        'delivery failed for good; event dead-lettered');
    }
  }

  let droppedLogged = 0;
  function deliverThen(envelope: Envelope, done: (d: Delivery) => void, opts?: { force?: boolean }): void {
    if (stopping) return done({ status: 'aborted', attempts: 0 });
    if (size >= maxQueued && !opts?.force) {
      metrics?.dropped.inc({ sink: sink.name });
      const t = now();
      if (t - droppedLogged > 5_000) {
        droppedLogged = t;
        logger.error({ id: envelope.id, channel: envelope.channel, maxQueued }, 'sink queue full; event dropped (ephemeral events are at-most-once)');
      }
      return done({ status: 'dropped', attempts: 0 });
    }
    setSize(+1);
    const key = orderingKey(envelope);
    const lane = lanes.get(key);
    if (lane) {
      lane.push({ envelope, resolve: done });
    } else {
      const fresh: Pending[] = [{ envelope, resolve: done }];
      lanes.set(key, fresh);
      // Start on a microtask, so that a burst of deliver() calls joins the lane first.
      queueMicrotask(() => runLane(key, fresh));
    }
  }

  return {
    sink,
    get size() { return size; },
    deliver(envelope, opts) {
      return new Promise<Delivery>((resolve) => deliverThen(envelope, resolve, opts));
    },
    deliverThen,
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
          const w = takeRun();
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

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    timer.unref();
    function done() {
      signal?.removeEventListener('abort', done);
      clearTimeout(timer);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}
