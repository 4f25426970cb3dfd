// Small helpers shared by the chaos suite: bounded polling, free ports, random names.
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Polls `check` (sync or async) until it returns a truthy value, or throws after `timeoutMs` with `what`.
 * Resolves with that value. Errors thrown by `check` count as "not yet".
 */
export async function waitFor(check, what, timeoutMs = 30_000, intervalMs = 50) {
  const deadline = Date.now() + timeoutMs;
  let lastError;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) {
      const why = lastError ? ` (last error: ${lastError.message})` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${why}`);
    }
    await sleep(intervalMs);
  }
}

/** Like waitFor, but resolves false at the deadline instead of throwing. */
export async function pollUntil(check, timeoutMs, intervalMs = 50) {
  try {
    await waitFor(check, 'condition', timeoutMs, intervalMs);
    return true;
  } catch {
    return false;
  }
}

/** Rejects with `what` if `promise` has not settled within `ms`. */
export function within(promise, ms, what) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms);
      timer.unref();
    }),
  ]);
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** A name unique to this run: `prefix-<time>-<random>` (letters, digits, dashes). */
export function randomName(prefix) {
  return `${prefix}-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
}

/** A monotonic clock in ms. */
export const now = () => performance.now();
