// Poison rows: a captured `json` column holding '{"a":"\u0000"}' or '{"a":"\ud800"}' (PostgreSQL's json
// type accepts both; jsonb refuses them). Such an event must be stored losslessly wherever it has to
// be stored — sidekick.dead_letters (the receiver refuses it) or a sink's backlog sidekick.deliveries
// (the sink was down longer than checkpointAfter) — and must never hold up the other events.
import { settle, timeToRecover } from '../lib/analyze.mjs';
import { readDeadLetters, readTruth } from '../lib/db.mjs';
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

/** Keys 1 and 2 carry the poison values; written about 4 times a second between the others' writes. */
const POISON = { 1: '{"a":"\\u0000"}', 2: '{"a":"\\ud800"}' };
const isPoison = (body) => body.includes('\\u0000') || /\\ud[89ab][0-9a-f]{2}/i.test(body);

/**
 * Nothing crashed in these scenarios, so nothing should arrive twice: duplicates mean the poison row
 * broke the drain's bookkeeping and everything in flight was sent again (issue 16 item 1: 5× and more).
 */
function noDuplicates(ctx, results) {
  for (const r of results)
    if (r.duplicates > 0) ctx.fail(`${r.sink} got ${r.duplicates} duplicate(s) without any crash: the poison rows disturbed the other events`);
}

function poisonWriters(ctx, db) {
  const w = writers(ctx, db.url, { writers: 4, rate: 200, keys: keyRange(3, 50) });
  const p = writers(ctx, db.url, { writers: 1, rate: 4, keys: [1, 2], payload: (key) => POISON[key] });
  return {
    async stop() {
      const a = await w.stop();
      const b = await p.stop();
      return { a, b };
    },
  };
}

export const poisonDeadLetter = {
  name: 'poison-rows-dead-letter',
  description: 'rows with \\u0000 / \\ud800 in a json column, answered 400 by the receiver: dead-lettered, nothing else held up',
  quick: true,
  async run(ctx) {
    const db = await sharedDatabase(ctx, { keys: 50 });
    const hook = await webhookReceiver(ctx);
    hook.setBehaviour((_e, _attempt, body) => (isPoison(body) ? 400 : 204));
    const redis = sharedRedisStream(ctx);
    const b = await bridge(ctx, bridgeConfig(db, { hook: webhookSinkConfig(hook.url, { retry: FAST_RETRY }), redis: redis.sink }));
    const w = poisonWriters(ctx, db);
    await sleep(ctx.ms(6_000, 4_000));
    await w.stop();
    const truth = await readTruth(db.url);
    const excluded = new Map(['1', '2'].map((k) => [k, new Set(Array.from({ length: truth.get(k) }, (_, i) => i + 1))]));
    const poisonCount = (truth.get('1') ?? 0) + (truth.get('2') ?? 0);
    const t0 = now();
    // The webhook must not get the poison events (excluded); Redis takes everything, poison included.
    const result = await settle(db.url, [hook], { timeoutMs: ctx.ms(30_000, 15_000), excluded });
    const redisResult = await settle(db.url, [redis.reader], { timeoutMs: 10_000 });
    let dead = [];
    await waitFor(
      async () => {
        dead = (await readDeadLetters(db.url)).filter((d) => d.sink === 'hook');
        return dead.length >= poisonCount;
      },
      'dead letters',
      15_000,
      200,
    ).catch((err) => ctx.note(err.message));
    const distinct = new Set(dead.map((d) => `${d.key}:${d.v}`)).size;
    ctx.note(
      `${poisonCount} poison row(s) written; ${distinct} in sidekick.dead_letters after ${((now() - t0) / 1000).toFixed(1)} s; ` +
        `receiver answered ${hook.requests()} request(s); bridge logged ${b.state.errors} error line(s)`,
    );
    if (distinct < poisonCount) ctx.fail(`only ${distinct} of ${poisonCount} poison events are in sidekick.dead_letters`);
    noDuplicates(ctx, [...result.results, ...redisResult.results]);
    return { ...result, results: [...result.results, ...redisResult.results], complete: result.complete && redisResult.complete };
  },
};

export const poisonBacklog = {
  name: 'poison-rows-backlog',
  description: 'rows with \\u0000 / \\ud800 while the webhook is down 4 s (> checkpointAfter 1 s): kept in the backlog, delivered after',
  quick: false,
  async run(ctx) {
    const db = await sharedDatabase(ctx, { keys: 50 });
    const hook = await webhookReceiver(ctx);
    const redis = sharedRedisStream(ctx);
    const b = await bridge(
      ctx,
      bridgeConfig(db, { hook: webhookSinkConfig(hook.url, { retry: FAST_RETRY }), redis: redis.sink }, { outbox: { checkpointAfter: '1s' } }),
    );
    const w = poisonWriters(ctx, db);
    await sleep(1_500);
    await hook.kill();
    await sleep(4_000);
    await hook.revive();
    const since = now();
    const recoveryMs = await timeToRecover(db.url, [hook, redis.reader], { since, timeoutMs: ctx.ms(30_000, 15_000) });
    await sleep(1_000);
    await w.stop();
    const result = await settle(db.url, [hook, redis.reader], { timeoutMs: ctx.ms(30_000, 15_000) });
    ctx.note(`bridge logged ${b.state.errors} error line(s)`);
    noDuplicates(ctx, result.results);
    return { ...result, recoveryMs };
  },
};
