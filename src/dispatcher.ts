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
  /** Envelopes queued or in flight. */
  readonly size: number;
  /** Resolves when `size` is below the high-water mark (for sources that can wait). */
  waitForRoom(): Promise<void>;
  /** Stops taking work, waits up to `timeout` ms for what is queued, then aborts the rest. Idempotent. */
  stop(timeout: number): Promise<void>;
}

interface Pending { readonly envelope: Envelope; readonly resolve: (d: Delivery) => void }
/** A run of consecutive envelopes of one lane, sent together and never split across batches. */
interface Waiting { readonly envelopes: readonly Envelope[]; readonly resolve: (o: readonly ItemOutcome[]) => void }

const jitter = (ms: number) => ms * (0.85 + Math.random() * 0.3);

/**
 * Per-sink delivery: one FIFO lane per ordering key (so a retrying event holds back only later
 * events of its own key), a batcher that gathers the heads of all lanes into `send()` calls with at
 * most `concurrency` in flight, per-event retries through p-retry (exponential, randomised), and a
 * sink-wide pause while every attempt fails, so a dead endpoint is not hammered.
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
  const lanes = new Map<string, Pending[]>();
  const waiting: Waiting[] = [];
  let waitingCount = 0;
  let size = 0;
  let inFlight = 0;
  let flushScheduled = false;
  let lingerTimer: NodeJS.Timeout | undefined;
  let pausedUntil = 0;
  let consecutiveFailures = 0;
  let stopping: Promise<void> | undefined;
  const idleWaiters: (() => void)[] = [];
  const roomWaiters: (() => void)[] = [];
  const highWater = Math.max(1, Math.floor(maxQueued * 0.8));

  function setSize(delta: number) {
    size += delta;
    metrics?.queued.set({ sink: sink.name }, size);
    if (size < highWater) for (const w of roomWaiters.splice(0)) w();
    if (size === 0) for (const w of idleWaiters.splice(0)) w();
  }

  // A sink that delivers a batch in order may take a run of one key's envelopes at once; any other
  // sink gets one envelope per key per batch, so that order never depends on the sink.
  const runLength = sink.ordered ? batch.size : 1;

  // ---- batcher: runs from the heads of lanes → send() calls -----------------------------------
  function submit(envelopes: readonly Envelope[]): Promise<readonly ItemOutcome[]> {
    return new Promise((resolve) => {
      waiting.push({ envelopes, resolve });
      waitingCount += envelopes.length;
      schedule();
    });
  }

  function schedule(): void {
    if (waiting.length === 0 || inFlight >= concurrency) return;
    const wait = pausedUntil - now();
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
    while (waiting.length > 0 && inFlight < concurrency && pausedUntil <= now()) {
      const groups: Waiting[] = [];
      let n = 0;
      while (waiting.length > 0 && (groups.length === 0 || n + (waiting[0] as Waiting).envelopes.length <= batch.size)) {
        const g = waiting.shift() as Waiting;
        groups.push(g);
        n += g.envelopes.length;
      }
      waitingCount -= n;
      inFlight++;
      void sendBatch(groups).finally(() => {
        inFlight--;
        schedule();
      });
    }
    schedule();
  }

  async function sendBatch(groups: Waiting[]): Promise<void> {
    const items = groups.flatMap((g) => g.envelopes);
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
    if (anyOk) {
      consecutiveFailures = 0;
      pausedUntil = 0;
    } else if (allRetriable) {
      // Every attempt failed: back the whole sink off (exponential, jittered, capped), then probe again.
      consecutiveFailures++;
      const first = outcomes[0] as { error: SidekickError };
      const asked = first.error instanceof RetriableError ? first.error.retryAfterMs ?? 0 : 0;
      const backoff = Math.min(retry.maxDelay, Math.max(asked, retry.initialDelay * 2 ** Math.min(consecutiveFailures - 1, 30)));
      pausedUntil = now() + jitter(backoff);
      if (consecutiveFailures === 1 || consecutiveFailures % 10 === 0) {
        logger.warn({ failures: consecutiveFailures, backoffMs: Math.round(backoff), err: first.error.message }, 'sink failing; backing off');
      }
    }
    let at = 0;
    for (const g of groups) {
      g.resolve(outcomes.slice(at, at + g.envelopes.length));
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
        onFailedAttempt: async ({ error }) => {
          // Honour Retry-After (capped by maxDelay) on top of the computed backoff.
          const asked = error instanceof RetriableError ? error.retryAfterMs : undefined;
          if (asked && asked > 0) await sleep(Math.min(asked, retry.maxDelay), controller.signal);
        },
      });
      return { status: 'delivered', attempts };
    } catch (error) {
      if (controller.signal.aborted) return { status: 'aborted', attempts };
      return { status: 'dead', attempts, error: last ?? classifyError(error) };
    }
  }

  async function runLane(key: string, lane: Pending[]): Promise<void> {
    while (lane.length > 0) {
      if (controller.signal.aborted) {
        finish(lane.shift() as Pending, { status: 'aborted', attempts: 0 });
        continue;
      }
      const run = lane.slice(0, runLength);
      const outcomes = await submit(run.map((p) => p.envelope));
      let i = 0;
      for (; i < run.length; i++) {
        const o = outcomes[i] as ItemOutcome;
        if (o.ok) {
          finish(lane.shift() as Pending, { status: 'delivered', attempts: 1 });
        } else if (!o.error.retriable) {
          metrics?.failed.inc({ sink: sink.name, retriable: 'false' });
          finish(lane.shift() as Pending, { status: 'dead', attempts: 1, error: o.error });
        } else {
          break;
        }
      }
      if (i < run.length) {
        // The first retriable failure: retry it alone. Later envelopes of the run go out again after it
        // (even if the sink took them), so a key's order holds; at-least-once allows the duplicate.
        const head = lane[0] as Pending;
        const result = await attempt(head.envelope, outcomes[i] as ItemOutcome);
        lane.shift();
        finish(head, result);
      }
    }
    lanes.delete(key);
  }

  function finish(pending: Pending, result: Delivery): void {
    record(pending.envelope, result);
    pending.resolve(result);
    setSize(-1);
  }

  function record(envelope: Envelope, result: Delivery): void {
    if (result.status === 'delivered') {
      metrics?.delivered.inc({ sink: sink.name });
      const born = Date.parse(envelope.at);
      if (Number.isFinite(born)) metrics?.latency.observe({ sink: sink.name }, Math.max(0, now() - born) / 1000);
    } else if (result.status === 'dead') {
      metrics?.dead.inc({ sink: sink.name });
      logger.error({ id: envelope.id, channel: envelope.channel, attempts: result.attempts, code: result.error.code, err: errorMessage(result.error) },
        'delivery failed for good; event dead-lettered');
    }
  }

  let droppedLogged = 0;
  return {
    sink,
    get size() { return size; },
    deliver(envelope, opts) {
      if (stopping) return Promise.resolve({ status: 'aborted', attempts: 0 });
      if (size >= maxQueued && !opts?.force) {
        metrics?.dropped.inc({ sink: sink.name });
        const t = now();
        if (t - droppedLogged > 5_000) {
          droppedLogged = t;
          logger.error({ id: envelope.id, channel: envelope.channel, maxQueued }, 'sink queue full; event dropped (ephemeral events are at-most-once)');
        }
        return Promise.resolve({ status: 'dropped', attempts: 0 });
      }
      return new Promise<Delivery>((resolve) => {
        setSize(+1);
        const key = orderingKey(envelope);
        const lane = lanes.get(key);
        if (lane) {
          lane.push({ envelope, resolve });
        } else {
          const fresh: Pending[] = [{ envelope, resolve }];
          lanes.set(key, fresh);
          // Start on a microtask, so that a burst of deliver() calls joins the lane first.
          queueMicrotask(() => void runLane(key, fresh));
        }
      });
    },
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
        for (const w of waiting.splice(0)) w.resolve(w.envelopes.map(() => stopped));
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
