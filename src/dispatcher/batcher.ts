import type { Logger } from 'pino';
import type { DispatchOptions } from '../config.js';
import type { Envelope } from '../envelope.js';
import { classifyError } from '../errors.js';
import type { ItemOutcome, SendResult, Sink } from '../sink.js';
import type { Circuit } from './circuit.js';

/**
 * A run of consecutive envelopes of one lane (or one event's retry), sent together and never split
 * across batches. done() hears the run's own outcomes, in order.
 */
export interface Run {
  readonly envelopes: readonly Envelope[];
  done(outcomes: readonly ItemOutcome[]): void;
}

/** One event's retry, due now: it waits for a send() slot ahead of every first attempt. */
export interface Retry extends Run {
  readonly order: number;
}

/** Due retries as a binary min-heap on the event's arrival `order`: the oldest event's first. */
export class RetryHeap {
  readonly items: Retry[] = [];

  push(r: Retry): void {
    const items = this.items;
    let i = items.push(r) - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const p = items[parent] as Retry;
      if (p.order <= r.order) break;
      items[i] = p;
      i = parent;
    }
    items[i] = r;
  }

  /** Takes the retry of the oldest event (the heap is not empty). */
  pop(): Retry {
    const items = this.items;
    const top = items[0] as Retry;
    const last = items.pop() as Retry;
    const n = items.length;
    if (n > 0) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= n) break;
        const r = l + 1;
        const c = r < n && (items[r] as Retry).order < (items[l] as Retry).order ? r : l;
        if ((items[c] as Retry).order >= last.order) break;
        items[i] = items[c] as Retry;
        i = c;
      }
      items[i] = last;
    }
    return top;
  }
}

export interface Batcher {
  /** Queues a lane's run for a send() slot, behind the runs already waiting. */
  enqueue(run: Run): void;
  /**
   * Queues the retry of one event (its arrival `order`) ahead of every first attempt, oldest event
   * first; resolves with the outcome of that attempt.
   */
  retry(order: number, envelope: Envelope): Promise<ItemOutcome>;
  /** The dispatcher stopped: no more sends; every run still waiting hears `outcome` for each envelope. */
  stop(outcome: ItemOutcome): void;
}

/**
 * Runs → send() calls: gathers waiting runs into batches of up to `batch.size` envelopes, at most
 * circuit.limit() calls in flight, never while the circuit holds the sink. A batch that is not full
 * waits up to `batch.linger` for more. Due retries go before first attempts, oldest event first, so
 * the single probe of a paused sink moves the oldest retrying event on instead of starting yet
 * another fresh one (issue 16 item 2: that starved every retry while each first attempt failed).
 */
export function createBatcher(params: {
  sink: Sink;
  batch: DispatchOptions['batch'];
  circuit: Circuit;
  /** Handed to every send(); aborted when the dispatcher stops. */
  signal: AbortSignal;
  now: () => number;
  logger: Logger;
}): Batcher {
  const { sink, batch, circuit, signal, now, logger } = params;
  /**
   * Runs waiting for a send() slot, oldest first, from index `waitingHead` on. A head index instead
   * of shift(): with thousands of lanes waiting, shifting the array on every send cost more than
   * the send itself.
   */
  let waiting: Run[] = [];
  let waitingHead = 0;
  /** Retries that are due, oldest event first. */
  const retries = new RetryHeap();
  /** Envelopes in `waiting` and `retries`. */
  let waitingCount = 0;
  let inFlight = 0;
  let flushScheduled = false;
  let lingerTimer: NodeJS.Timeout | undefined;
  let stopped = false;

  function waitingRuns(): number {
    return retries.items.length + waiting.length - waitingHead;
  }

  /** The run flush() takes next: a due retry (oldest event first), else the oldest waiting run. */
  function nextRun(): Run {
    return retries.items.length > 0 ? (retries.items[0] as Retry) : (waiting[waitingHead] as Run);
  }

  function takeNext(): Run {
    return retries.items.length > 0 ? retries.pop() : takeRun();
  }

  /** Takes the oldest waiting run, compacting the array now and then (amortised O(1)). */
  function takeRun(): Run {
    const run = waiting[waitingHead] as Run;
    waiting[waitingHead++] = undefined as unknown as Run;
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
    if (waitingRuns() === 0 || inFlight >= circuit.limit()) return;
    const wait = circuit.heldUntil() - now();
    if (wait > 0) {
      if (!lingerTimer) {
        lingerTimer = setTimeout(() => {
          lingerTimer = undefined;
          schedule();
        }, wait);
        lingerTimer.unref();
      }
      return;
    }
    if (waitingCount >= batch.size || batch.linger === 0) {
      // Let the current burst of lanes submit before sending, so batches fill up.
      if (!flushScheduled) {
        flushScheduled = true;
        setImmediate(() => {
          flushScheduled = false;
          flush();
        });
      }
    } else if (!lingerTimer) {
      lingerTimer = setTimeout(() => {
        lingerTimer = undefined;
        flush();
      }, batch.linger);
      lingerTimer.unref();
    }
  }

  function flush(): void {
    while (waitingRuns() > 0 && inFlight < circuit.limit() && circuit.heldUntil() <= now()) {
      const groups: Run[] = [];
      let n = 0;
      while (waitingRuns() > 0 && (groups.length === 0 || n + nextRun().envelopes.length <= batch.size)) {
        const g = takeNext();
        groups.push(g);
        n += g.envelopes.length;
      }
      waitingCount -= n;
      inFlight++;
      send(groups, circuit.generation());
    }
    schedule();
  }

  /** Sends a batch; its outcomes go to sent() (callbacks, not async/await: one per event here). */
  function send(groups: Run[], sentIn: number): void {
    const items = groups.length === 1 ? (groups[0] as Run).envelopes : groups.flatMap((g) => g.envelopes);
    let pending: Promise<SendResult>;
    try {
      // (Promise.resolve: the sink's own promise as it is; anything else, e.g. a plain array, still works.)
      pending = Promise.resolve(sink.send(items, signal));
    } catch (error) {
      pending = Promise.reject(error);
    }
    pending.then(
      (outcomes) => sent(groups, sentIn, items, outcomes),
      (error) => sent(groups, sentIn, items, undefined, error),
    );
  }

  function sent(groups: Run[], sentIn: number, items: readonly Envelope[], result: SendResult | undefined, error?: unknown): void {
    inFlight--;
    try {
      settle(groups, sentIn, items, result, error);
    } finally {
      schedule();
    }
  }

  function settle(groups: Run[], sentIn: number, items: readonly Envelope[], result: SendResult | undefined, error: unknown): void {
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
    const decision = circuit.onBatchResult(outcomes, now(), sentIn);
    if (decision.kind === 'recovered') {
      logger.info({ failures: decision.failures }, 'sink recovered');
    } else if (decision.kind === 'paused' && (decision.failures === 1 || decision.failures % 10 === 0)) {
      logger.warn(
        { failures: decision.failures, backoffMs: Math.round(Math.max(decision.askedMs, decision.backoffMs)), err: decision.error.message },
        'sink failing; backing off',
      );
    }
    if (groups.length === 1) {
      (groups[0] as Run).done(outcomes);
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

  return {
    enqueue(run) {
      waiting.push(run);
      waitingCount += run.envelopes.length;
      schedule();
    },
    retry(order, envelope) {
      return new Promise((resolve) => {
        retries.push({ order, envelopes: [envelope], done: (o) => resolve(o[0] as ItemOutcome) });
        waitingCount++;
        schedule();
      });
    },
    stop(outcome) {
      if (stopped) return;
      stopped = true;
      if (lingerTimer) clearTimeout(lingerTimer);
      // Runs still waiting will never be sent: release them (their lanes give the events back).
      while (waitingRuns() > 0) {
        const w = takeNext();
        w.done(w.envelopes.map(() => outcome));
      }
      waitingCount = 0;
    },
  };
}
