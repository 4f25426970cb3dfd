import { afterEach } from 'vitest';
import type { Bridge } from '../../src/bridge.js';
import type { SinkDefinition } from '../../src/sink.js';
import { startBridge } from './bridge.js';
import { createTestDatabase, type TestDatabase } from './db.js';

/**
 * A test's own database and bridges, torn down after each test (bridges stopped, newest first, then
 * the database dropped), so a test file needs no afterEach of its own for them. Call it once at the
 * top of a describe block.
 */
export interface TestBed {
  /** A fresh database on the test server (dropped after the test). */
  database(prefix?: string): Promise<TestDatabase>;
  /** A bridge in this process (stopped after the test); see startBridge. */
  bridge(...args: Parameters<typeof startBridge>): Promise<Bridge>;
  /** Something else to undo after the test (run before the database is dropped). */
  defer(undo: () => unknown): void;
}

export function useTestBed(): TestBed {
  let databases: TestDatabase[] = [];
  let bridges: Bridge[] = [];
  let undo: (() => unknown)[] = [];
  afterEach(async () => {
    const [b, u, d] = [bridges, undo, databases];
    bridges = [];
    undo = [];
    databases = [];
    for (const bridge of b.reverse()) await bridge.stop();
    for (const fn of u.reverse()) await fn();
    for (const db of d) await db.drop();
  });
  return {
    async database(prefix) {
      const db = await createTestDatabase(prefix);
      databases.push(db);
      return db;
    },
    async bridge(url: string, document: Record<string, unknown>, extraSinks?: readonly SinkDefinition[], logTo?: { write(line: string): unknown }) {
      const bridge = await startBridge(url, document, extraSinks, logTo);
      bridges.push(bridge);
      return bridge;
    },
    defer(fn) {
      undo.push(fn);
    },
  };
}
