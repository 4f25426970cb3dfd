// Brokers going away mid-stream: a private Redis killed and restarted; the shared RabbitMQ restarted
// with scripts/services.sh (full run only); the Kafka mock broker down and up (full run only).
import { randomName, now, sleep } from '../lib/util.mjs';
import { settle, timeToRecover } from '../lib/analyze.mjs';
import { amqpReader, kafkaReader } from '../lib/receivers.mjs';
import { servicesScript, shared } from '../lib/services.mjs';
import {
  bridge,
  bridgeConfig,
  FAST_RETRY,
  keyRange,
  privateRedisStream,
  sharedDatabase,
  webhookReceiver,
  webhookSinkConfig,
  writers,
} from '../lib/kit.mjs';

/** Common shape: 4 writers, the broker's sink and a webhook, the fault, the recovery. */
async function brokerFault(ctx, { sinkName, sink, reader, down, up, downMs = 3_000 }) {
  const db = await sharedDatabase(ctx, { keys: 50 });
  const hook = await webhookReceiver(ctx);
  const logs = [hook, reader];
  await bridge(ctx, bridgeConfig(db, { hook: webhookSinkConfig(hook.url, { retry: FAST_RETRY }), [sinkName]: sink }));
  const w = writers(ctx, db.url, { writers: 4, rate: 200, keys: keyRange(1, 50) });
  await sleep(ctx.ms(2_500, 1_500));
  const t0 = now();
  await down();
  ctx.note(`${sinkName} down in ${Math.round(now() - t0)} ms`);
  const hookDuring = await timeToRecover(db.url, [hook], { since: now(), timeoutMs: 3_000 });
  ctx.note(hookDuring === undefined ? `webhook stalled with ${sinkName} down` : `webhook kept up during the outage (${hookDuring} ms behind)`);
  await sleep(Math.max(0, downMs - (now() - t0)));
  const t1 = now();
  await up();
  const since = now();
  ctx.note(`${sinkName} down ${((since - t0) / 1000).toFixed(1)} s in all (start took ${Math.round(since - t1)} ms)`);
  const recoveryMs = await timeToRecover(db.url, logs, { since, timeoutMs: ctx.ms(60_000, 15_000) });
  await sleep(ctx.ms(1_500, 1_000));
  await w.stop();
  return { ...(await settle(db.url, logs, { timeoutMs: ctx.ms(45_000, 15_000) })), recoveryMs };
}

export const redisRestart = {
  name: 'redis-restart',
  description: 'private redis-server (appendfsync always) killed with SIGKILL mid-stream, restarted 3 s later',
  quick: true,
  async run(ctx) {
    const redis = await privateRedisStream(ctx);
    return brokerFault(ctx, {
      sinkName: 'redis',
      sink: redis.sink,
      reader: redis.reader,
      down: () => redis.server.kill(),
      up: () => redis.server.start(),
    });
  },
};

export const rabbitmqRestart = {
  name: 'rabbitmq-restart',
  description: 'shared RabbitMQ stopped and started (scripts/services.sh) mid-stream; durable queue read by amqplib',
  quick: false,
  timeoutMs: 240_000,
  async run(ctx) {
    const exchange = randomName('chaos');
    const queue = `${exchange}-q`;
    const reader = await amqpReader(shared().amqp, exchange, queue, 'amqp');
    ctx.defer(() => reader.close());
    ctx.defer(async () => {
      const amqp = (await import('amqplib')).default;
      const c = await amqp.connect(shared().amqp);
      c.on('error', () => {});
      const ch = await c.createChannel();
      await ch.deleteQueue(queue).catch(() => {});
      await ch.deleteExchange(exchange).catch(() => {});
      await c.close().catch(() => {});
    });
    return brokerFault(ctx, {
      sinkName: 'amqp',
      sink: { type: 'amqp', url: shared().amqp, exchange, connectTimeout: '2s', heartbeat: '5s', confirmTimeout: '5s', retry: FAST_RETRY },
      reader,
      down: () => servicesScript('down', 'rabbitmq'),
      up: () => servicesScript('up', 'rabbitmq'),
      downMs: 1_000,
    });
  },
};

export const kafkaBrokerDown = {
  name: 'kafka-broker-down',
  description: 'Kafka mock broker down (connections dropped, refused) for 4 s, then up (control port broker-down/up)',
  quick: false,
  async run(ctx) {
    const services = shared();
    const topic = randomName('chaos');
    await services.kafkaCommand(`create ${topic} 4`);
    const reader = await kafkaReader(services.kafka, topic, 'kafka');
    ctx.defer(() => reader.close());
    // Whatever happens, the broker is up again afterwards.
    ctx.defer(() => services.kafkaCommand('broker-up').catch(() => {}));
    return brokerFault(ctx, {
      sinkName: 'kafka',
      sink: { type: 'kafka', brokers: services.kafka, topic, connectionTimeout: '1s', timeout: '5s', retry: FAST_RETRY },
      reader,
      down: () => services.kafkaCommand('broker-down'),
      up: () => services.kafkaCommand('broker-up'),
      downMs: 4_000,
    });
  },
};
