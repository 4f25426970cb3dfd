import { FatalError, networkFailure, RetriableError, SidekickError } from '../../src/sink-kit.js';

/** What kafkajs errors carry that we look at. */
interface KafkaJsLike {
  name?: string;
  message?: string;
  type?: string;
  code?: unknown;
  retriable?: boolean;
  cause?: unknown;
}

/**
 * kafkajs wraps the error that ended its own retrier in KafkaJSNumberOfRetriesExceeded (always
 * `retriable: false`, even when the cause is a broker that is simply down) or
 * KafkaJSNonRetriableError. The cause is what tells us whether another attempt can succeed.
 */
export function rootKafkaError(error: unknown): KafkaJsLike {
  let e = error as KafkaJsLike;
  for (let depth = 0; depth < 5; depth++) {
    const wrapped = e?.name === 'KafkaJSNumberOfRetriesExceeded' || e?.name === 'KafkaJSNonRetriableError';
    if (!wrapped || !(e.cause instanceof Error) || e.cause === e) break;
    e = e.cause as KafkaJsLike;
  }
  return e ?? {};
}

/** The brokers cannot be reached or cannot take writes at all: back the whole sink off, keep the attempts. */
const UNAVAILABLE_NAMES = new Set([
  'KafkaJSConnectionError',
  'KafkaJSConnectionClosedError',
  'KafkaJSRequestTimeoutError',
  'KafkaJSBrokerNotFound',
  'KafkaJSNoBrokerAvailableError',
  'KafkaJSSASLAuthenticationError',
  'KafkaJSAuthenticationTimeout',
]);
const UNAVAILABLE_TYPES = new Set([
  'BROKER_NOT_AVAILABLE',
  'LEADER_NOT_AVAILABLE',
  'NETWORK_EXCEPTION',
  'REQUEST_TIMED_OUT',
  'NOT_ENOUGH_REPLICAS',
  'NOT_ENOUGH_REPLICAS_AFTER_APPEND',
  'COORDINATOR_NOT_AVAILABLE',
  'KAFKA_STORAGE_ERROR',
  'SASL_AUTHENTICATION_FAILED',
  'CLUSTER_AUTHORIZATION_FAILED',
]);
/** One record (or a batch of them) exceeds what the broker accepts: smaller batches may pass, that record never. */
export const TOO_LARGE_TYPES = new Set(['MESSAGE_TOO_LARGE', 'RECORD_LIST_TOO_LARGE']);
const PROGRAMMER_ERRORS = new Set(['TypeError', 'RangeError', 'SyntaxError', 'ReferenceError']);

const codeOf = (e: KafkaJsLike) =>
  `KAFKA_${(e.type ?? e.name ?? 'ERROR')
    .replace(/^KafkaJS/, '')
    .replace(/([a-z])([A-Z])/g, '$1_$2')
    .toUpperCase()}`;

/**
 * Classifies what kafkajs threw for a produce to `topic`:
 * - the topic does not exist → FatalError naming it (we never rely on auto-creation);
 * - the brokers cannot be reached, or cannot take writes (no leader, not enough replicas, bad
 *   credentials) → RetriableError with `unavailable: true`: the dispatcher pauses the whole sink
 *   without using up the events' attempts (`retry.maxAge` bounds that);
 * - any other error kafkajs marks retriable (a moved partition leader, …) → RetriableError;
 * - everything else (record too large, invalid record, authorization on the topic, programmer
 *   errors) → FatalError: another attempt would fail the same way.
 */
export function classifyKafkaError(error: unknown, topic?: string): SidekickError {
  if (error instanceof SidekickError) return error;
  const root = rootKafkaError(error);
  const message = root.message || (error as KafkaJsLike)?.message || String(error);
  const where = topic === undefined ? '' : ` (topic "${topic}")`;
  if (root.name !== undefined && PROGRAMMER_ERRORS.has(root.name)) {
    return new FatalError('SINK_BUG', `${root.name}: ${message}`, { cause: error });
  }
  if (root.type === 'UNKNOWN_TOPIC_OR_PARTITION') {
    return new FatalError(
      'KAFKA_TOPIC_MISSING',
      topic === undefined
        ? `a topic does not exist on the brokers; create it first (pg-sidekick never relies on topic auto-creation): ${message}`
        : `topic "${topic}" does not exist; create it first (pg-sidekick never relies on topic auto-creation)`,
      { cause: error },
    );
  }
  if (root.type === 'TOPIC_AUTHORIZATION_FAILED') {
    return new FatalError('KAFKA_TOPIC_AUTHORIZATION', `not authorized to write to topic${topic === undefined ? '' : ` "${topic}"`}: ${message}`, {
      cause: error,
    });
  }
  if (root.type !== undefined && TOO_LARGE_TYPES.has(root.type)) {
    return new FatalError(
      'KAFKA_RECORD_TOO_LARGE',
      `the record is larger than the broker accepts${where} (raise the topic's max.message.bytes): ${message}`,
      { cause: error },
    );
  }
  const unavailable =
    (root.name !== undefined && UNAVAILABLE_NAMES.has(root.name)) ||
    (root.type !== undefined && UNAVAILABLE_TYPES.has(root.type)) ||
    // A socket error kafkajs passes through: the one network table says whether nothing answered.
    (typeof root.code === 'string' && networkFailure(root.code) === 'unreachable');
  if (unavailable) return new RetriableError(codeOf(root), `${message}${where}`, { cause: error, unavailable: true });
  // kafkajs' own verdict; errors it does not mark either way (plain Errors) are treated as transient.
  if (root.retriable !== false) return new RetriableError(codeOf(root), `${message}${where}`, { cause: error });
  return new FatalError(codeOf(root), `${message}${where}`, { cause: error });
}
