// PostgreSQL (a private server) stopped with `-m fast` (clean) or `-m immediate` (a crash, recovery at
// start) under four writers, down for a moment, started again.
import { timeToRecover, settle } from '../lib/analyze.mjs';
import {
  bridge,
  bridgeConfig,
  FAST_RETRY,
  keyRange,
  privateDatabase,
  sharedRedisStream,
  webhookReceiver,
  webhookSinkConfig,
  writers,
} from '../lib/kit.mjs';
import { now, sleep, waitFor } from '../lib/util.mjs';

function pgRestart(mode, quick) {
  return {
    name: `pg-restart-${mode}`,
    description: `private PostgreSQL stopped with -m ${mode} under 4 writers, down 2 s, started again (webhook + redis)`,
    quick,
    async run(ctx) {
      const { server, db } = await privateDatabase(ctx, { keys: 50 });
      const hook = await webhookReceiver(ctx);
      const redis = sharedRedisStream(ctx);
      const b = await bridge(ctx, bridgeConfig(db, { hook: webhookSinkConfig(hook.url, { retry: FAST_RETRY }), redis: redis.sink }));
      const w = writers(ctx, db.url, { writers: 4, rate: 200, keys: keyRange(1, 50) });
      await sleep(ctx.ms(2_500, 1_500));
      await server.stop(mode);
      const down = now();
      await sleep(2_000);
      await server.start();
      const since = now();
      ctx.note(`database down ${((since - down) / 1000).toFixed(1)} s`);
      const readyMs = await waitFor(async () => (await b.readyz()) && now() - since, '/readyz after the restart', 60_000, 50).catch(() => undefined);
      ctx.note(readyMs === undefined ? '/readyz not back within 60 s' : `/readyz back ${(readyMs / 1000).toFixed(1)} s after the database`);
      const recoveryMs = await timeToRecover(db.url, [hook, redis.reader], { since, timeoutMs: ctx.ms(45_000, 15_000) });
      await sleep(ctx.ms(2_000, 1_000));
      const written = await w.stop();
      ctx.note(`writers ${written.rate.toFixed(0)} ev/s, ${written.failed} failed write attempt(s) during the outage`);
      return { ...(await settle(db.url, [hook, redis.reader], { timeoutMs: ctx.ms(30_000, 15_000) })), recoveryMs };
    },
  };
}

export const pgRestartFast = pgRestart('fast', true);
export const pgRestartImmediate = pgRestart('immediate', true);
