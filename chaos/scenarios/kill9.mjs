// kill -9 of the bridge three times under four concurrent writers, webhook and Redis on the same routes.
import { timeToRecover, settle } from '../lib/analyze.mjs';
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

export default {
  name: 'kill9',
  description: 'bridge killed with SIGKILL 3× under 4 writers (webhook + redis on the same routes)',
  quick: true,
  async run(ctx) {
    const db = await sharedDatabase(ctx, { keys: 50 });
    const hook = await webhookReceiver(ctx);
    // A receiver across a network: 20–80 ms per request, so the webhook lags Redis a little and
    // holds events in flight when the bridge dies.
    hook.setLatency(() => 20 + Math.random() * 60);
    const redis = sharedRedisStream(ctx);
    const config = bridgeConfig(db, { hook: webhookSinkConfig(hook.url, { retry: FAST_RETRY }), redis: redis.sink });
    let b = await bridge(ctx, config, { name: 'bridge-0' });
    const rate = 400;
    const w = writers(ctx, db.url, { writers: 4, rate, keys: keyRange(1, 50) });
    let since;
    for (let kill = 1; kill <= 3; kill++) {
      await sleep(ctx.ms(2_000, 1_200) + Math.random() * 1_000);
      await b.kill9();
      await sleep(200 + Math.random() * 500);
      since = now();
      b = await bridge(ctx, config, { name: `bridge-${kill}` });
    }
    const recoveryMs = await timeToRecover(db.url, [hook, redis.reader], { since, timeoutMs: ctx.ms(30_000, 15_000) });
    await sleep(ctx.ms(1_500, 500));
    const written = await w.stop();
    const outcome = await settle(db.url, [hook, redis.reader], { timeoutMs: ctx.ms(30_000, 15_000) });
    ctx.note(
      `writers ${written.rate.toFixed(0)} ev/s (4 writers); duplicates per crash: ` +
        `${outcome.results.map((r) => `${r.sink} ${(r.duplicates / 3).toFixed(0)}`).join(', ')}` +
        ` (= ${outcome.results.map((r) => `${r.sink} ${(r.duplicates / 3 / written.rate).toFixed(2)} s`).join(', ')} of writer traffic;` +
        ` issue 16 item 3 allows what the sink had in flight + ~1 s = ${written.rate.toFixed(0)} events)`,
    );
    return { ...outcome, recoveryMs };
  },
};
