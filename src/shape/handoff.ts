/**
 * Hands values over in the order they were pushed, whatever order they become ready in: a
 * transform's promise for one event may settle after the next event's, and a sink must still get
 * one key's events in order. A value that is ready while nothing waits before it goes at once.
 */
export interface OrderedHandoff<T> {
  push(value: T | Promise<T>, then: (result: T | Failed) => void): void;
  readonly pending: number;
}

/** A pushed promise that rejected. */
export interface Failed {
  readonly failed: unknown;
}

interface Slot<T> {
  ready: boolean;
  result: T | Failed | undefined;
  readonly then: (result: T | Failed) => void;
}

export function createOrderedHandoff<T>(): OrderedHandoff<T> {
  const slots: Slot<T>[] = [];
  let head = 0;
  function flush(): void {
    while (head < slots.length && (slots[head] as Slot<T>).ready) {
      const slot = slots[head] as Slot<T>;
      slots[head++] = undefined as never;
      slot.then(slot.result as T | Failed);
    }
    if (head === slots.length) {
      slots.length = 0;
      head = 0;
    } else if (head > 1024 && head * 2 > slots.length) {
      slots.splice(0, head);
      head = 0;
    }
  }
  return {
    get pending() {
      return slots.length - head;
    },
    push(value, then) {
      if (!(value instanceof Promise)) {
        if (head === slots.length) then(value);
        else slots.push({ ready: true, result: value, then });
        return;
      }
      const slot: Slot<T> = { ready: false, result: undefined, then };
      slots.push(slot);
      value.then(
        (result) => {
          slot.ready = true;
          slot.result = result;
          flush();
        },
        (failed: unknown) => {
          slot.ready = true;
          slot.result = { failed };
          flush();
        },
      );
    },
  };
}

/**
 * Runs at most `max` tasks at once, the rest in the order they came. Transforms are async (JSONata's
 * evaluate is): started all at once for a backlog, thousands of interleaved evaluations cost several
 * times what the same evaluations cost a few at a time (bench/shaping.mjs: ~70 µs against ~9 µs an
 * event), so each sink's transforms run through one of these.
 */
export function createLimiter(max: number): <T>(task: () => Promise<T>) => Promise<T> {
  let active = 0;
  // A queue with a head index: a backlog queues tens of thousands, and shift() would copy them.
  let waiting: (() => void)[] = [];
  let head = 0;
  const next = () => {
    active--;
    if (head < waiting.length) {
      const run = waiting[head] as () => void;
      waiting[head++] = undefined as never;
      if (head === waiting.length) {
        waiting = [];
        head = 0;
      }
      run();
    }
  };
  return <T>(task: () => Promise<T>) =>
    new Promise<T>((resolve, reject) => {
      const run = () => {
        active++;
        task().then(resolve, reject).finally(next);
      };
      if (active < max) run();
      else waiting.push(run);
    });
}
