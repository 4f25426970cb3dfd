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
