import { setMaxListeners } from 'node:events';
import type { Logger } from 'pino';
import type { DispatchOptions } from '../config.js';
import type { Envelope } from '../envelope.js';
import { errorMessage, SidekickError } from '../errors.js';
import type { Metrics } from '../metrics.js';
import type { ItemOutcome, Sink } from '../sink.js';
import { settleBy } from '../wait.js';
import { createBatcher } from './batcher.js';
import { createCircuit } from './circuit.js';
import { createLanes, type Item, type Lane } from './lanes.js';
import { createRetries } from './retries.js';

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
   * another in the order given; other keys flow concurrently. Never rejects. `force`: past
   * `maxQueued` (a durable source, which bounds what it hands over itself).
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
  /** Stops taking work, waits up to `timeout` ms for what is queued, then aborts the rest. Idempotent. */
  stop(timeout: number): Promise<void>;
}

/** Who hears how an envelope's delivery ended (a method, so a source's own record can be it). */
export interface DeliveryReceiver {
  delivered(d: Delivery): void;
}

/** The usual outcome, shared (never mutated). */
const DELIVERED_FIRST_TIME: Delivery = Object.freeze({ status: 'delivered', attempts: 1 });

/**
 * Per-sink delivery, wired from its parts: lanes (one FIFO per ordering key, so a retrying event
 * holds back only later events of its own key), the batcher (runs from the heads of lanes → send()
 * calls, at most `concurrency` in flight, due retries first), the circuit (a sink-wide pause while
 * every attempt fails, so a dead endpoint is not hammered: one request probes it after each pause,
 * and the first success restores full concurrency; `Retry-After` holds the whole sink) and the
 * retries (per event, exponential and randomised, capped by `retry.attempts` and `retry.maxAge`).
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
  const circuit = createCircuit({ concurrency, initialDelay: retry.initialDelay, maxDelay: retry.maxDelay });
  const batcher = createBatcher({ sink, batch, circuit, signal: controller.signal, now, logger });
  const retryEvent = createRetries({ retry, signal: controller.signal, now, sinkName: sink.name, logger, metrics, resubmit: batcher.retry });
  const lanes = createLanes({ ran: ranLane, start: runLane });
  // A sink that delivers a batch in order may take a run of one key's envelopes at once; any other
  // sink gets one envelope per key per batch, so that order never depends on the sink.
  const runLength = sink.ordered ? batch.size : 1;
  /** Events handed to deliver() so far: the next one's arrival `order`. */
  let arrivals = 0;
  let size = 0;
  let stopping: Promise<void> | undefined;
  const idleWaiters: (() => void)[] = [];
  // The latency series, looked up once (a labels object per event costs more than the event's send);
  // the queue size and the delivered count are read when /metrics is scraped.
  const latency = metrics?.latency.labels(sink.name);
  let delivered = 0;
  metrics?.watchSink(sink.name, { queued: () => size, delivered: () => delivered });

  function setSize(delta: number) {
    size += delta;
    if (size === 0 && idleWaiters.length > 0) for (const w of idleWaiters.splice(0)) w();
  }

  function idle(): Promise<void> {
    return new Promise<void>((resolve) => idleWaiters.push(resolve));
  }

  /**
   * Queues the lane's next run for a send() slot (callbacks, not async/await: one of these per
   * event is the hot path).
   */
  function runLane(lane: Lane): void {
    if (lane.length === 0) {
      lanes.drop(lane);
      return;
    }
    if (controller.signal.aborted) {
      while (lane.length > 0) finish(lane.shift(), { status: 'aborted', attempts: 0 });
      lanes.drop(lane);
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
    batcher.enqueue(lane);
  }

  /**
   * A lane's run was sent. On the first retriable failure in it, that envelope is retried alone;
   * the later envelopes of the run go out again after it (even if the sink took them), so a key's
   * order holds; at-least-once allows the duplicate.
   */
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
    void retryEvent(head.envelope, head.order, outcomes[i] as ItemOutcome).then((result) => {
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
      logger.error(
        { id: envelope.id, channel: envelope.channel, attempts: result.attempts, code: result.error.code, err: errorMessage(result.error) },
        'delivery failed for good; the event goes to the dead letters (its source says where it is kept)',
      );
    }
  }

  let droppedLogged = 0;
  function deliverTo(envelope: Envelope, receiver: DeliveryReceiver, opts?: { force?: boolean }): void {
    if (stopping) {
      receiver.delivered({ status: 'aborted', attempts: 0 });
      return;
    }
    if (size >= maxQueued && !opts?.force) {
      metrics?.dropped.inc({ sink: sink.name });
      const t = now();
      if (t - droppedLogged > 5_000) {
        droppedLogged = t;
        logger.error({ id: envelope.id, channel: envelope.channel, maxQueued }, 'sink queue full; event dropped (ephemeral events are at-most-once)');
      }
      receiver.delivered({ status: 'dropped', attempts: 0 });
      return;
    }
    setSize(+1);
    lanes.add(envelope, receiver, arrivals++);
  }

  return {
    sink,
    get size() {
      return size;
    },
    deliver(envelope, opts) {
      return new Promise<Delivery>((resolve) => deliverTo(envelope, { delivered: resolve }, opts));
    },
    deliverTo,
    stop(timeout) {
      stopping ??= (async () => {
        if (size > 0) await settleBy(idle(), Date.now() + timeout);
        controller.abort(new Error('dispatcher stopped'));
        // Runs still waiting in the batcher will never be sent: their lanes give them back as aborted.
        batcher.stop({ ok: false, error: new SidekickError('STOPPED', 'dispatcher stopped') });
        if (size > 0) await idle();
      })();
      return stopping;
    },
  };
}
