// Retries and shutdown: a receiver that fails each event's first two attempts; SIGTERM while the
// database is down.
import { settle } from '../lib/analyze.mjs';
import {
  bridge,
  bridgeConfig,
  FAST_RETRY,
  keyRange,
  privateDatabase,
  sharedDatabase,
  webhookReceiver,
  webhookSinkConfig,
  writers,
} from '../lib/kit.mjs';
import { now, sleep, waitFor } from '../lib/util.mjs';

/**
 * Webhook with retry {attempts: 6, initialDelay: 100ms, maxDelay: 5s}; the receiver answers 500 to
 * the first two attempts of every event and 204 to the third. 120 events must all arrive.
 */
export const retryFirstTwo = {
  name: 'retry-first-two',
  description: 'receiver fails the first 2 attempts of each event, accepts the 3rd (retry attempts 6, 100ms..5s); 120 events',
  quick: true,
  async run(ctx) {
    const db = await sharedDatabase(ctx, { keys: 30 });
    const hook = await webhookReceiver(ctx);
    hook.setBehaviour((_e, attempt) => (attempt <= 2 ? 500 : 204));
    await bridge(ctx, bridgeConfig(db, { hook: webhookSinkConfig(hook.url, { retry: { attempts: 6, initialDelay: '100ms', maxDelay: '5s' } }) }));
    const w = writers(ctx, db.url, { writers: 4, rate: 60, keys: keyRange(1, 30) });
    await waitFor(() => w.committed() >= 120, '120 writes', 10_000, 5);
    await w.stop();
    const since = now();
    const result = await settle(db.url, [hook], { timeoutMs: ctx.ms(60_000, 30_000) });
    const delivered = result.results[0]?.delivered ?? 0;
    ctx.note(
      `${delivered} of ${result.written} delivered ` +
        `${result.complete ? `after ${((now() - since) / 1000).toFixed(1)} s` : `within ${ctx.ms(60, 30)} s`}; ${hook.requests()} request(s)`,
    );
    return { ...result, recoveryMs: result.complete ? result.settledMs : undefined };
  },
};

/**
 * SIGTERM and a database outage together, with a slow receiver (1.5–2.5 s per request) so deliveries
 * are in flight and the shutdown has to wait for them: the bridge must exit within shutdown.timeout
 * + 2 s, say `stopped`, and lose nothing (what it could not acknowledge is delivered again by the
 * next bridge). With a receiver answering in 100–300 ms the bridge of 109173e exited in time; with
 * this one it took 9.6 s for a 5 s timeout.
 *   sigterm-during-outage: the database stops, SIGTERM 1 s later
 *   sigterm-then-outage: SIGTERM, the database stops 1 s later (in the middle of the shutdown)
 */
function sigtermScenario(name, order, quick, { latency = [1_500, 2_500], gapMs = 1_000 } = {}) {
  return {
    name,
    description:
      order === 'outage-first'
        ? 'SIGTERM 1 s after the (private) database stopped, receiver taking ~2 s per request; exit time against shutdown.timeout 5 s'
        : 'the (private) database stops 1 s after SIGTERM, receiver taking ~2 s per request; exit time against shutdown.timeout 5 s',
    quick,
    async run(ctx) {
      const { server, db } = await privateDatabase(ctx, { keys: 50 });
      const hook = await webhookReceiver(ctx);
      hook.setLatency(() => latency[0] + Math.random() * (latency[1] - latency[0]));
      const timeoutMs = 5_000;
      const config = bridgeConfig(db, { hook: webhookSinkConfig(hook.url, { retry: FAST_RETRY }) }, { shutdown: { timeout: '5s' } });
      const b = await bridge(ctx, config, { name: 'bridge-0' });
      const w = writers(ctx, db.url, { writers: 4, rate: 200, keys: keyRange(1, 50) });
      await sleep(ctx.ms(2_000, 1_500));
      let exit;
      if (order === 'outage-first') {
        await server.stop('fast');
        await sleep(1_000);
        exit = await b.sigterm(60_000);
      } else {
        const exiting = b.sigterm(60_000);
        await sleep(gapMs);
        await server.stop('fast');
        exit = await exiting;
      }
      const limit = timeoutMs + 2_000;
      ctx.note(
        `SIGTERM → exit in ${(exit.ms / 1000).toFixed(1)} s (shutdown.timeout 5 s), code ${exit.code ?? exit.signal}, ` +
          `${exit.stopped ? '"stopped" logged' : 'no "stopped" line'}`,
      );
      if (exit.ms > limit) ctx.fail(`exit took ${(exit.ms / 1000).toFixed(1)} s, more than shutdown.timeout + 2 s`);
      if (!exit.stopped) ctx.fail('no "stopped" summary line at exit');
      if (exit.signal === 'SIGKILL') ctx.fail('had to be killed after 60 s');
      hook.setLatency(() => 0);
      await server.start();
      const since = now();
      await bridge(ctx, config, { name: 'bridge-1' });
      await sleep(1_000);
      await w.stop();
      const result = await settle(db.url, [hook], { timeoutMs: ctx.ms(30_000, 15_000) });
      return { ...result, recoveryMs: result.complete ? Math.round(now() - since) : undefined };
    },
  };
}

export const sigtermOutage = sigtermScenario('sigterm-during-outage', 'outage-first', true);
export const sigtermThenOutage = sigtermScenario('sigterm-then-outage', 'sigterm-first', false);
