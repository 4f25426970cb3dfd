// Every scenario, in the order they run. `quick: true` ones make up `npm run chaos -- --quick` (no
// shared service is ever restarted by those: PostgreSQL and Redis restarts happen on private servers).
import { kafkaBrokerDown, rabbitmqRestart, redisRestart } from './brokers.mjs';
import { notifyFlood, outOfOrder, twoInstances } from './drain.mjs';
import kill9 from './kill9.mjs';
import { pgRestartFast, pgRestartImmediate } from './pg-restart.mjs';
import { poisonBacklog, poisonDeadLetter } from './poison.mjs';
import { retryFirstTwo, sigtermOutage, sigtermThenOutage } from './retries.mjs';
import { webhook500, webhookHang, webhookKilled, webhookPoisonKeys } from './webhook-faults.mjs';

export const scenarios = [
  kill9,
  pgRestartFast,
  pgRestartImmediate,
  webhook500,
  webhookHang,
  webhookKilled,
  webhookPoisonKeys,
  redisRestart,
  rabbitmqRestart,
  kafkaBrokerDown,
  outOfOrder,
  twoInstances,
  poisonDeadLetter,
  poisonBacklog,
  notifyFlood,
  retryFirstTwo,
  sigtermOutage,
  sigtermThenOutage,
];
