import { compileTemplate, FatalError, RetriableError, type CloudEventsOptions, type Envelope, type SidekickError } from '../../src/sink-kit.js';
import { createBodyFormatter, type BodyFormat } from '../amqp/body.js';

/** The arguments of one XADD after the command name: key, [MAXLEN ~ N], *, field value … (the same names as the Kafka headers). */
export type XaddArgs = (string | number)[];

/**
 * Builds the XADD for an envelope. What lands in the stream (entry id chosen by Redis, `*`):
 *
 * | field     | value                                                                   |
 * |-----------|-------------------------------------------------------------------------|
 * | `id`      | the envelope id (idempotency key: the same event re-sent has the same id) |
 * | `seq`     | durable events: the outbox number, growing in commit order per key       |
 * | `channel` | the channel (`schema.table` for row changes)                             |
 * | `source`  | table, notify, publish or schedule                                      |
 * | `op`      | INSERT/UPDATE/DELETE, row changes only                                  |
 * | `key`     | the ordering key, only when the event has one                            |
 * | `data`    | the body in `format`: the envelope JSON by default                       |
 */
export function createEntryBuilder(options: {
  stream: string;
  format: BodyFormat;
  maxLen?: number | undefined;
  cloudevents?: CloudEventsOptions | undefined;
}): (e: Envelope) => XaddArgs {
  // A field the event lacks throws FatalError TEMPLATE_FIELD_MISSING: that event is dead-lettered.
  const stream = compileTemplate(options.stream, undefined, { name: 'stream' });
  const formatBody = createBodyFormatter(options.format, { cloudEvents: options.cloudevents });
  const trim: XaddArgs = options.maxLen === undefined ? [] : ['MAXLEN', '~', options.maxLen];
  return (e) => {
    const args: XaddArgs = [stream(e), ...trim, '*', 'id', e.id];
    if (e.seq !== undefined) args.push('seq', e.seq);
    args.push('channel', e.channel, 'source', e.source);
    if (e.op !== undefined) args.push('op', e.op);
    if (e.key !== undefined) args.push('key', e.key);
    args.push('data', formatBody(e).text);
    return args;
  };
}

/** Reply errors that say "not now" (loading, failover, memory full): the server is there but cannot take writes. */
const NOT_NOW = new Set(['LOADING', 'BUSY', 'OOM', 'READONLY', 'MASTERDOWN', 'CLUSTERDOWN', 'TRYAGAIN', 'NOREPLICAS', 'MISCONF', 'MOVED', 'ASK']);
/** Reply errors that another attempt cannot fix. */
const NEVER = new Set(['WRONGTYPE', 'NOPERM', 'ERR']);

/**
 * Classifies one command's failure. A Redis error reply ("WRONGTYPE Operation against a key holding
 * the wrong kind of value") starts with its code. Anything that is not a reply (connection closed,
 * not connected, timed out) means the server may not have it: retriable, destination unavailable.
 */
export function classifyRedisError(error: unknown, where: string): SidekickError {
  const message = error instanceof Error ? error.message : String(error);
  const isReply = error instanceof Error && error.name === 'ReplyError';
  if (isReply) {
    const code = message.split(' ', 1)[0] ?? '';
    if (NEVER.has(code)) return new FatalError(`REDIS_${code}`, `redis ${where}: ${message}`, { cause: error });
    return new RetriableError(`REDIS_${code || 'ERROR'}`, `redis ${where}: ${message}`, { cause: error, unavailable: NOT_NOW.has(code) });
  }
  if (/timed out/i.test(message)) return new RetriableError('REDIS_TIMEOUT', `redis ${where}: ${message}`, { cause: error, unavailable: true });
  return new RetriableError('REDIS_UNAVAILABLE', `redis ${where}: ${message}`, { cause: error, unavailable: true });
}
