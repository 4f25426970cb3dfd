/**
 * Napping until there is something to do: a loop that found no work naps until its next poll, or until
 * something wakes it (a NOTIFY, a reconnect, a stop). A wake-up that comes while the loop is still
 * looking for work must not be lost: the loop reads `count` before it looks and passes it to nap(),
 * which returns at once if a wake-up came since. Used by the outbox drain and the scheduler.
 */
export interface Wakeup {
  /** Wakes every napper now (and makes the next nap of a loop that read `count` before return at once). */
  wake(): void;
  /** Wake-ups so far. */
  readonly count: number;
  /**
   * Naps up to `ms`, or until a wake-up after `since` (default: now), or until the signal aborts.
   * Several loops may nap at once; each is woken.
   */
  nap(ms: number, since?: number): Promise<void>;
}

export function createWakeup(signal?: AbortSignal): Wakeup {
  let count = 0;
  const nappers = new Set<() => void>();
  return {
    get count() {
      return count;
    },
    wake() {
      count++;
      for (const done of [...nappers]) done();
    },
    nap(ms, since = count) {
      return new Promise((resolve) => {
        if (count !== since || ms <= 0 || signal?.aborted) return resolve();
        const done = () => {
          clearTimeout(timer);
          nappers.delete(done);
          signal?.removeEventListener('abort', done);
          resolve();
        };
        const timer = setTimeout(done, ms);
        timer.unref();
        nappers.add(done);
        signal?.addEventListener('abort', done, { once: true });
      });
    },
  };
}
