// The drain itself: transactions committing out of id order, two instances with one killed, a NOTIFY flood.
import { settle, timeToRecover } from '../lib/analyze.mjs';
import { connect } from '../lib/db.mjs';
import {
  bridge,
  bridgeConfig,
  FAST_RETRY,
  keyRange,
  sharedDatabase,
  sharedRedisStream,
  webhookReceiver,
  webhookSinkConfig,
  writers,
} from '../lib/kit.mjs';
import { now, sleep } from '../lib/util.mjs';
import { lateCommits } from '../lib/writers.mjs';

export const outOfOrder = {
  name: 'out-of-order',
  description: 'transactions that take their outbox id first and commit last (held 1.5 s) among 4 writers',
  quick: true,
  async run(ctx) {
    const db = await sharedDatabase(ctx, { keys: 50 });
    const hook = await webhookReceiver(ctx);
    const redis = sharedRedisStream(ctx);
    await bridge(ctx, bridgeConfig(db, { hook: webhookSinkConfig(hook.url, { retry: FAST_RETRY }), redis: redis.sink }));
    // Keys 41–50 belong to the late transactions only, so they never wait on a row lock.
    const w = writers(ctx, db.url, { writers: 4, rate: 200, keys: keyRange(1, 40) });
    const late = await lateCommits(db.url, { keys: keyRange(41, 50), holdMs: 1_500, times: ctx.ms(4, 3), concurrent: 3 });
    ctx.note(`${late} late commit(s), each held 1.5 s while ~300 later ids committed`);
    await w.stop();
    return settle(db.url, [hook, redis.reader], { timeoutMs: ctx.ms(30_000, 15_000) });
  },
};

export const twoInstances = {
  name: 'two-instances',
  description: 'two bridges share the outbox; one is killed with SIGKILL, the other takes its partitions over',
  quick: true,
  async run(ctx) {
    const db = await sharedDatabase(ctx, { keys: 50 });
    const hook = await webhookReceiver(ctx);
    hook.setLatency(() => 10 + Math.random() * 30);
    const redis = sharedRedisStream(ctx);
    const config = bridgeConfig(db, { hook: webhookSinkConfig(hook.url, { retry: FAST_RETRY }), redis: redis.sink });
    const a = await bridge(ctx, config, { name: 'bridge-a' });
    await bridge(ctx, config, { name: 'bridge-b' });
    const w = writers(ctx, db.url, { writers: 4, rate: 200, keys: keyRange(1, 50) });
    // Let the two split the partitions (they rebalance every second).
    await sleep(ctx.ms(3_000, 2_500));
    await a.kill9();
    const since = now();
    const recoveryMs = await timeToRecover(db.url, [hook, redis.reader], { since, timeoutMs: ctx.ms(30_000, 15_000) });
    await sleep(ctx.ms(2_000, 1_000));
    await w.stop();
    return { ...(await settle(db.url, [hook, redis.reader], { timeoutMs: ctx.ms(30_000, 15_000) })), recoveryMs };
  },
};

/**
 * A NOTIFY flood on a listened channel (routed to the webhook) while the writers write: 20 000
 * notifications in transactions of 200. The flood's own payloads carry a key and version
 * ({"k":"f3","v":17}), so the NOTIFY path is checked like the captured rows — while the bridge runs,
 * it must lose none of them either.
 */
export const notifyFlood = {
  name: 'notify-flood',
  description: '20 000 NOTIFYs (transactions of 200) on a listened channel routed to the webhook, while 4 writers write',
  quick: false,
  async run(ctx) {
    const db = await sharedDatabase(ctx, { keys: 50 });
    const hook = await webhookReceiver(ctx);
    hook.extra = true;
    const redis = sharedRedisStream(ctx);
    const config = bridgeConfig(db, { hook: webhookSinkConfig(hook.url, { retry: FAST_RETRY }), redis: redis.sink }, { listen: ['chaos_flood'] });
    config.routes.push({ from: 'chaos_flood', to: 'hook' });
    await bridge(ctx, config);
    const w = writers(ctx, db.url, { writers: 4, rate: 200, keys: keyRange(1, 50) });
    await sleep(1_000);
    const total = ctx.ms(20_000, 10_000);
    const keys = 20;
    const client = await connect(db.url);
    const t0 = now();
    try {
      // Paced at about 5 000 a second (a transaction of 200 every 40 ms), so the flood lasts ~4 s of writing.
      for (let i = 0; i < total; i += 200) {
        const due = t0 + (i / 200) * 40;
        if (due > now()) await sleep(due - now());
        await client.query(
          `SELECT pg_notify('chaos_flood', json_build_object('k', 'f' || (n % $2), 'v', n / $2 + 1)::text)
          FROM generate_series($1::int, $1::int + 199) AS n`,
          [i, keys],
        );
      }
    } finally {
      await client.end();
    }
    const floodSeconds = (now() - t0) / 1000;
    ctx.note(`${total} NOTIFYs sent in ${floodSeconds.toFixed(1)} s (${(total / floodSeconds).toFixed(0)}/s)`);
    const since = now();
    const extraTruth = new Map(Array.from({ length: keys }, (_, k) => [`f${k}`, total / keys]));
    await sleep(1_000);
    await w.stop();
    const settleStart = now();
    const result = await settle(db.url, [hook, redis.reader], { timeoutMs: ctx.ms(60_000, 15_000), extraTruth });
    const flood = hook.arrivals.filter((a) => a.key.startsWith('f'));
    ctx.note(
      `webhook got ${new Set(flood.map((a) => `${a.key}:${a.v}`)).size} of ${total} NOTIFYs (written = ${total} NOTIFYs + ${result.written} row ` +
        `changes; redis gets the row changes only)`,
    );
    return {
      ...result,
      written: result.written + total,
      recoveryMs: result.complete ? Math.round(settleStart - since + result.settledMs) : undefined,
    };
  },
};
