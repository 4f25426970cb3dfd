// The webhook receiver misbehaving while four writers write: 500 for a while, hanging, killed and
// restarted, and poison keys (one always answered 400, one always 500).
import { readDeadLetters } from '../lib/db.mjs';
import { settle, timeToRecover } from '../lib/analyze.mjs';
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
import { now, sleep, waitFor } from '../lib/util.mjs';

/** A fault of `ms` on the receiver: `begin(hook)` and `end(hook)`. Redis rides along to show fan-out independence. */
function receiverFault(name, description, quick, begin, end) {
  return {
    name,
    description,
    quick,
    async run(ctx) {
      const db = await sharedDatabase(ctx, { keys: 50 });
      const hook = await webhookReceiver(ctx);
      const redis = sharedRedisStream(ctx);
      await bridge(ctx, bridgeConfig(db, { hook: webhookSinkConfig(hook.url, { timeout: '1s', retry: FAST_RETRY }), redis: redis.sink }));
      const w = writers(ctx, db.url, { writers: 4, rate: 200, keys: keyRange(1, 50) });
      await sleep(ctx.ms(2_000, 1_000));
      await begin(hook);
      const faultStart = now();
      // Redis keeps flowing while the webhook is down: everything committed a moment ago reaches it.
      const redisDuring = await timeToRecover(db.url, [redis.reader], { since: now(), timeoutMs: 3_000 });
      ctx.note(redisDuring === undefined ? 'redis stalled with the webhook down' : `redis kept up during the fault (${redisDuring} ms behind)`);
      await sleep(Math.max(0, ctx.ms(4_000, 3_000) - (now() - faultStart)));
      await end(hook);
      const recoveryMs = await timeToRecover(db.url, [hook, redis.reader], { since: now(), timeoutMs: ctx.ms(45_000, 15_000) });
      await sleep(ctx.ms(1_500, 1_000));
      await w.stop();
      ctx.note(`receiver answered ${hook.requests()} request(s)`);
      return { ...(await settle(db.url, [hook, redis.reader], { timeoutMs: ctx.ms(30_000, 15_000) })), recoveryMs };
    },
  };
}

export const webhook500 = receiverFault(
  'webhook-500',
  'webhook receiver answers 500 for 4 s',
  true,
  (h) => h.setBehaviour(() => 500),
  (h) => h.setBehaviour(() => 204),
);
export const webhookHang = receiverFault(
  'webhook-hang',
  'webhook receiver hangs (never answers) for 4 s; sink timeout 1 s',
  false,
  (h) => h.setBehaviour(() => 'hang'),
  (h) => h.setBehaviour(() => 204),
);
export const webhookKilled = receiverFault(
  'webhook-killed',
  'webhook receiver killed (port closed) for 4 s, then listening again',
  true,
  (h) => h.kill(),
  (h) => h.revive(),
);

/**
 * Poison keys: every event of key 1 is answered 400 (dead-lettered at once), every event of key 2 is
 * answered 500 (dead-lettered after retry.attempts). Neither may hold up the other keys.
 */
export const webhookPoisonKeys = {
  name: 'webhook-poison-keys',
  description: 'key 1 always answered 400, key 2 always 500 (retry attempts 4): both dead-lettered, other keys unaffected',
  quick: true,
  async run(ctx) {
    const db = await sharedDatabase(ctx, { keys: 50 });
    const hook = await webhookReceiver(ctx);
    hook.setBehaviour((e) => (e.key === '1' ? 400 : e.key === '2' ? 500 : 204));
    await bridge(ctx, bridgeConfig(db, { hook: webhookSinkConfig(hook.url, { retry: { attempts: 4, initialDelay: '100ms', maxDelay: '500ms' } }) }));
    const w = writers(ctx, db.url, { writers: 4, rate: 200, keys: keyRange(3, 50) });
    // The poison keys get a write every 250 ms, interleaved with everything else.
    const p = writers(ctx, db.url, { writers: 1, rate: 4, keys: [1, 2] });
    await sleep(ctx.ms(6_000, 4_000));
    await w.stop();
    await p.stop();
    const t0 = now();
    const result = await settle(db.url, [hook], { timeoutMs: ctx.ms(30_000, 15_000), excluded: await poisonVersions(db.url, ['1', '2']) });
    // Every poison event must end in sidekick.dead_letters for this sink.
    const expected = [...result.truth].filter(([k]) => k === '1' || k === '2').reduce((n, [, v]) => n + v, 0);
    let dead = [];
    await waitFor(
      async () => {
        dead = (await readDeadLetters(db.url)).filter((d) => d.sink === 'hook');
        return dead.length >= expected;
      },
      'dead letters',
      30_000,
      200,
    ).catch((err) => ctx.note(err.message));
    const distinct = new Set(dead.map((d) => `${d.key}:${d.v}`)).size;
    ctx.note(
      `dead-lettered ${distinct} of ${expected} poison event(s) (${dead.length} dead-letter rows) within ${((now() - t0) / 1000).toFixed(1)} s`,
    );
    if (distinct < expected) ctx.fail(`only ${distinct} of ${expected} poison events are in sidekick.dead_letters`);
    return { ...result, recoveryMs: undefined };
  },
};

/** Every committed version of `keys` (they must not arrive: they are dead-lettered). */
async function poisonVersions(url, keys) {
  const { readTruth } = await import('../lib/db.mjs');
  const truth = await readTruth(url);
  return new Map(keys.map((k) => [k, new Set(Array.from({ length: truth.get(k) ?? 0 }, (_, i) => i + 1))]));
}
