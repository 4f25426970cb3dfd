import type { Readiness } from './http.js';

/** One readiness check: true when that part of the bridge can do its work right now. */
export type ReadinessCheck = () => boolean;

export interface ReadinessChecks {
  /**
   * Adds a named check to /readyz (e.g. `outbox` for the drain loop). Returns a function that removes
   * it. A name can be registered once; a check that throws counts as failing.
   */
  register(name: string, check: ReadinessCheck): () => void;
  evaluate(): Readiness;
}

export function createReadinessChecks(): ReadinessChecks {
  const checks = new Map<string, ReadinessCheck>();
  return {
    register(name, check) {
      if (checks.has(name)) throw new Error(`readiness check "${name}" is already registered`);
      checks.set(name, check);
      return () => {
        if (checks.get(name) === check) checks.delete(name);
      };
    },
    evaluate() {
      const out: Record<string, boolean> = {};
      for (const [name, check] of checks) {
        try {
          out[name] = check() === true;
        } catch {
          out[name] = false;
        }
      }
      return { ready: Object.values(out).every(Boolean), checks: out };
    },
  };
}

export interface Heartbeat {
  /** Call on every turn of the loop (each poll, each batch, each idle wake-up). */
  beat(): void;
  /** True when the last beat is at most `maxSilenceMs` old; false before the first beat. */
  alive(): boolean;
}

/**
 * Liveness of a loop that should turn at least every so often (the outbox drain, the scheduler):
 * register `heartbeat.alive` as a readiness check and call `beat()` from the loop, and a loop that
 * hangs (a query stuck on a lock, a lost promise) makes /readyz fail instead of going unnoticed.
 * Give `maxSilenceMs` a margin over the loop's own interval (e.g. 3× the poll interval + the
 * longest expected batch).
 */
export function createHeartbeat(maxSilenceMs: number, now: () => number = Date.now): Heartbeat {
  let last: number | undefined;
  return {
    beat() {
      last = now();
    },
    alive() {
      return last !== undefined && now() - last <= maxSilenceMs;
    },
  };
}
