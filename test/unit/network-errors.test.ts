import { describe, expect, it } from 'vitest';
import { classifyKafkaError } from '../../sinks/kafka/errors.js';
import { networkError } from '../../sinks/webhook/outcome.js';
import { classifyError, errorCode, FatalError, NETWORK_ERRORS, networkFailure, RetriableError } from '../../src/errors.js';

// One table of network error codes (src/errors.ts), read by classifyError (what the dispatcher makes
// of anything a sink throws), by the webhook's outcome mapping and by the Kafka classification.
// They used to disagree: classifyError called only ECONNREFUSED "unavailable", the webhook also
// ENOTFOUND, EHOSTUNREACH, … — the same outage paused one sink and used up another's attempts.

const withCode = (code: string, message = `connect ${code} 10.0.0.1:443`) => Object.assign(new Error(message), { code });
const UNREACHABLE = ['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'EHOSTDOWN', 'ENETDOWN', 'UND_ERR_CONNECT_TIMEOUT'];

describe('the network error table', () => {
  it('holds the codes the brief names, each with one verdict', () => {
    for (const code of UNREACHABLE) expect(networkFailure(code), code).toBe('unreachable');
    for (const code of ['ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ECONNABORTED', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED']) {
      expect(networkFailure(code), code).toBe('lost');
    }
    for (const code of ['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT']) expect(networkFailure(code), code).toBe('timeout');
    expect(Object.isFrozen(NETWORK_ERRORS)).toBe(true);
  });

  it('knows nothing else: not SQLSTATEs, not inherited properties, not undefined', () => {
    expect(networkFailure('57P01')).toBeUndefined();
    expect(networkFailure('toString')).toBeUndefined();
    expect(networkFailure('constructor')).toBeUndefined();
    expect(networkFailure(undefined)).toBeUndefined();
  });

  it('errorCode finds the code through cause and AggregateError', () => {
    expect(errorCode(withCode('ECONNRESET'))).toBe('ECONNRESET');
    expect(errorCode(new AggregateError([withCode('ECONNREFUSED'), withCode('EHOSTUNREACH')]))).toBe('ECONNREFUSED');
    expect(errorCode(new TypeError('fetch failed', { cause: withCode('ENOTFOUND') }))).toBe('ENOTFOUND');
    expect(errorCode(new Error('plain'))).toBeUndefined();
    expect(errorCode(null)).toBeUndefined();
    expect(errorCode(Object.assign(new Error('protocol'), { code: 3 }))).toBeUndefined();
  });
});

describe('classifyError reads the table', () => {
  it('unreachable codes are retriable and unavailable (the sink backs off, attempts are kept)', () => {
    for (const code of UNREACHABLE) {
      const e = classifyError(withCode(code));
      expect(e, code).toBeInstanceOf(RetriableError);
      expect(e, code).toMatchObject({ code, retriable: true, unavailable: true });
    }
  });

  it('timeouts and lost connections are retriable and use up an attempt; the code is kept', () => {
    for (const code of ['ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_SOCKET']) {
      expect(classifyError(withCode(code)), code).toMatchObject({ code, retriable: true, unavailable: false });
    }
  });

  it('a code wrapped in an AggregateError (happy-eyeballs connect) counts too', () => {
    expect(classifyError(new AggregateError([withCode('ECONNREFUSED')], 'all addresses refused'))).toMatchObject({
      code: 'ECONNREFUSED',
      unavailable: true,
      message: 'all addresses refused',
    });
  });

  it('anything else: programmer errors fatal, the rest retriable SINK_ERROR', () => {
    expect(classifyError(new TypeError('x is not a function'))).toBeInstanceOf(FatalError);
    expect(classifyError(withCode('57P01', 'terminating connection'))).toMatchObject({ code: 'SINK_ERROR', retriable: true, unavailable: false });
    expect(classifyError('a string')).toMatchObject({ code: 'SINK_ERROR', retriable: true });
  });
});

describe('the sinks agree with classifyError on every code of the table', () => {
  it('webhook: unavailable exactly for the unreachable codes', () => {
    for (const code of Object.keys(NETWORK_ERRORS)) {
      const webhook = networkError(withCode(code), 'POST https://example.com/hook');
      expect(webhook.retriable, code).toBe(true);
      const core = classifyError(withCode(code)) as RetriableError;
      expect((webhook as RetriableError).unavailable, code).toBe(core.unavailable);
      expect(core.unavailable, code).toBe(networkFailure(code) === 'unreachable');
    }
  });

  it('kafka: a socket error kafkajs passes through is unavailable exactly when the table says unreachable', () => {
    for (const code of Object.keys(NETWORK_ERRORS)) {
      const kafka = classifyKafkaError(withCode(code));
      expect(kafka.retriable, code).toBe(true);
      expect((kafka as RetriableError).unavailable, code).toBe(networkFailure(code) === 'unreachable');
    }
  });
});
