import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { sinkDefinitions } from '../../sinks/index.js';
import { createBridge } from '../../src/bridge.js';
import { parseConfig } from '../../src/config.js';
import { useTestBed } from '../support/bed.js';
import { waitFor } from '../support/db.js';
import { quietLogger } from './sink-contract.js';

/** What a broker holds for one delivered event, as an independent client of the broker reads it. */
export interface Received<M> {
  /** The envelope the sink sent (the message body parsed). */
  readonly envelope: { id: string; payload: { n: number } };
  /** The idempotency key where the broker's ecosystem keeps it (messageId, a stream field…). */
  readonly key: string | undefined;
  /** The broker's own message, for the sink's own checks. */
  readonly message: M;
}

/** A sink type's side of the bridge contract. */
export interface BridgeContractTarget<M> {
  /** e.g. 'bridge → amqp sink → RabbitMQ (real PostgreSQL and RabbitMQ)'. */
  readonly title: string;
  /** The sink's YAML (under `sinks:`, named `out`), for a random `prefix` and a NOTIFY `channel`. */
  sinkYaml(prefix: string, channel: string): string;
  /** ${VAR}s the YAML uses. */
  readonly env: Record<string, string>;
  /** An independent reader, ready before the bridge sends (a queue bound, a stream key known…). */
  open(prefix: string, channel: string): Promise<{ read(): Promise<Received<M>[]>; close(): Promise<void> }>;
  /** The sink's own checks on the first message (routing key, headers, fields). */
  checkFirst(first: Received<M>, channel: string): void;
}

/**
 * End to end, the same for every broker sink: pg_notify in a fresh database → the bridge (LISTEN,
 * router, dispatcher) → the sink → the real broker → an independent client. The config is YAML, as a
 * user writes it. Every notification arrives, in order, each with a distinct id that is also where
 * the broker's ecosystem expects its idempotency key.
 */
export function bridgeContract<M>(target: BridgeContractTarget<M>): void {
  describe(target.title, () => {
    const bed = useTestBed();
    it('delivers every notification of a channel, in order, each under its own idempotency key', async () => {
      const db = await bed.database();
      const prefix = `sk-bridge-${Math.random().toString(36).slice(2, 10)}`;
      const channel = 'orders_events';
      const yaml = `database: ${db.url}\nlisten: [${channel}]\nsinks:\n  out:\n${target
        .sinkYaml(prefix, channel)
        .split('\n')
        .map((l) => `    ${l}`)
        .join('\n')}\nroutes:\n  - { from: ${channel}, to: out }\n`;
      const config = parseConfig(parseYaml(yaml), { env: target.env, sinks: sinkDefinitions });
      const reader = await target.open(prefix, channel);
      try {
        const bridge = createBridge({ config, logger: quietLogger });
        bed.defer(() => bridge.stop());
        await bridge.start();
        await waitFor(() => bridge.readiness().ready, 'the bridge to be ready');
        const c = await db.client();
        for (let i = 0; i < 200; i++) await c.query('SELECT pg_notify($1, $2)', [channel, JSON.stringify({ n: i })]);
        let got: Received<M>[] = [];
        await waitFor(
          async () => {
            got = await reader.read();
            return got.length >= 200;
          },
          '200 messages',
          15_000,
          50,
        );
        expect(got.map((r) => r.envelope.payload.n)).toEqual(Array.from({ length: 200 }, (_, i) => i));
        expect(got.map((r) => r.key)).toEqual(got.map((r) => r.envelope.id));
        expect(new Set(got.map((r) => r.key)).size).toBe(200);
        target.checkFirst(got[0] as Received<M>, channel);
      } finally {
        await reader.close();
      }
    });
  });
}
