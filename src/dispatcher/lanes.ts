import type { Envelope } from '../envelope.js';
import type { ItemOutcome } from '../sink.js';
import type { Run } from './batcher.js';
import type { DeliveryReceiver } from './index.js';

/** One queued envelope: a node of its lane's list. */
export interface Item {
  readonly envelope: Envelope;
  readonly receiver: DeliveryReceiver;
  /** Arrival number at this dispatcher: the lower, the older the event (retries go oldest first). */
  readonly order: number;
  next: Item | undefined;
}

/**
 * The queued envelopes of one ordering key (the channel and the key), oldest first. It is its own
 * Run while its next run waits for (or is in) a send() slot: one object per lane, no closure per run
 * (this is the hot path: one lane per event when every event has its own key).
 */
export class Lane implements Run {
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

export interface Lanes {
  /**
   * Appends an event to the lane of its channel and key: per-key FIFO order. A lane that did not
   * exist starts (start(lane)) on a microtask, so that a burst of add() calls joins it first.
   */
  add(envelope: Envelope, receiver: DeliveryReceiver, order: number): void;
  /** Forgets an empty lane: the key's next event starts a new one. */
  drop(lane: Lane): void;
}

/**
 * The lanes of one dispatcher, per channel and per key (no key: the channel's own lane). A retrying
 * event holds back only the later events of its own lane; every other lane keeps flowing.
 */
export function createLanes(params: {
  /** A lane's run was sent and these are its outcomes (Lane.done). */
  ran: (lane: Lane, outcomes: readonly ItemOutcome[]) => void;
  /** A new lane has its first events. */
  start: (lane: Lane) => void;
}): Lanes {
  const { ran, start } = params;
  const byChannel = new Map<string, Map<string, Lane>>();
  const keyless = new Map<string, Lane>();
  /** Lanes created since the last microtask: they start together, once a burst of add() calls has joined them. */
  let fresh: Lane[] = [];

  function startFresh(): void {
    const started = fresh;
    fresh = [];
    for (const lane of started) start(lane);
  }

  return {
    add(envelope, receiver, order) {
      const { channel, key } = envelope;
      let lane: Lane | undefined;
      let byKey: Map<string, Lane> | undefined;
      if (key === undefined) {
        lane = keyless.get(channel);
      } else {
        byKey = byChannel.get(channel);
        lane = byKey?.get(key);
      }
      if (!lane) {
        lane = new Lane(channel, key, ran);
        if (key === undefined) {
          keyless.set(channel, lane);
        } else {
          if (!byKey) {
            byKey = new Map();
            byChannel.set(channel, byKey);
          }
          byKey.set(key, lane);
        }
        if (fresh.length === 0) queueMicrotask(startFresh);
        fresh.push(lane);
      }
      lane.push({ envelope, receiver, order, next: undefined });
    },
    drop(lane) {
      if (lane.key === undefined) {
        keyless.delete(lane.channel);
        return;
      }
      const byKey = byChannel.get(lane.channel);
      if (!byKey) return;
      byKey.delete(lane.key);
      if (byKey.size === 0) byChannel.delete(lane.channel);
    },
  };
}
