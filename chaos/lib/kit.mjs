// What scenarios are made of: a database, receivers, bridge processes, writers — each cleaned up by
// the scenario's context whatever happens.
import { Redis } from 'ioredis';
import { startBridge, webhookSinkConfig } from './bridge.mjs';
import { CHANNEL, createChaosDatabase, TABLE } from './db.mjs';
import { redisStreamReader, startWebhookReceiver } from './receivers.mjs';
import { shared, startPrivatePostgres, startPrivateRedis } from './services.mjs';
import { randomName } from './util.mjs';
import { startWriters } from './writers.mjs';

/** Fast sink retries, so a recovered destination is used again within about a second. */
export const FAST_RETRY = { attempts: 1000, initialDelay: '100ms', maxDelay: '1s' };

export const keyRange = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** A chaos database on the shared PostgreSQL (dropped afterwards). */
export async function sharedDatabase(ctx, options) {
  const db = await createChaosDatabase(shared().pg, options);
  ctx.defer(() => db.drop());
  return db;
}

/** A private PostgreSQL server (it will be stopped/crashed) with a chaos database on it. */
export async function privateDatabase(ctx, options) {
  const server = await startPrivatePostgres();
  ctx.defer(() => server.destroy());
  const db = await createChaosDatabase(server.url, options);
  return { server, db };
}

export async function webhookReceiver(ctx, name = 'hook') {
  const receiver = await startWebhookReceiver(name);
  ctx.defer(() => receiver.close());
  return receiver;
}

/** A random stream on the shared Redis (deleted afterwards), its reader and the sink config. */
export function sharedRedisStream(ctx, name = 'redis') {
  return redisStream(ctx, shared().redis, name);
}

/** A private redis-server (it will be killed) with a stream, its reader and the sink config. */
export async function privateRedisStream(ctx, name = 'redis') {
  const server = await startPrivateRedis();
  ctx.defer(() => server.destroy());
  return { server, ...redisStream(ctx, server.url, name) };
}

function redisStream(ctx, url, name) {
  const stream = randomName('chaos');
  const reader = redisStreamReader(url, stream, name);
  ctx.defer(async () => {
    await reader.close();
    const c = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
    c.on('error', () => {});
    await c.del(stream).catch(() => {});
    c.disconnect();
  });
  return { reader, sink: { type: 'redis-stream', url, stream, timeout: '2s', retry: FAST_RETRY } };
}

/**
 * The bridge config routing the captured table to every sink in `sinks`. `capture:` names the table
 * (as a user's config would), which also makes the drain part of /readyz from the start: with
 * `outbox.enabled: auto` and no `capture:`, /readyz says ready before the drain has found the schema.
 */
export function bridgeConfig(db, sinks, { outbox = {}, ...extra } = {}) {
  return {
    database: db.url,
    capture: [{ table: TABLE }],
    outbox: { pollInterval: '200ms', ...outbox },
    sinks,
    routes: [{ from: CHANNEL, to: Object.keys(sinks) }],
    ...extra,
  };
}

export { webhookSinkConfig };

/** A bridge process (SIGKILLed at cleanup if still running). */
export async function bridge(ctx, config, options) {
  const b = await startBridge(ctx.dir, config, options);
  ctx.defer(() => b.kill9());
  ctx.bridges.push(b);
  return b;
}

/** Writers (stopped at cleanup if still running). */
export function writers(ctx, url, options) {
  const w = startWriters(url, options);
  let stopped;
  const stop = () => (stopped ??= w.stop());
  ctx.defer(stop);
  return { committed: w.committed, stop };
}
