import { PassThrough } from 'node:stream';
import { stdoutSink } from '../../sinks/stdout/index.js';
import { envelopeJson, notifyEnvelope } from '../../src/envelope.js';
import { describe, expect, it } from 'vitest';
import { contractContext, sinkContract } from './sink-contract.js';

// stdout's destination is a stream; a PassThrough we read back is the real thing here.
let out = new PassThrough();
let text = '';
sinkContract({
  name: 'stdout',
  create() {
    out = new PassThrough();
    text = '';
    out.on('data', (c: Buffer) => {
      text += c.toString();
    });
    return stdoutSink.create({ format: 'json' }, contractContext('console', { stdout: out }));
  },
  async received() {
    return text
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((l) => (JSON.parse(l) as { id: string }).id);
  },
});

describe('stdout formats', () => {
  const make = (format: 'json' | 'payload' | 'payload0') => {
    const s = new PassThrough();
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    return { sink: stdoutSink.create({ format }, contractContext('c', { stdout: s })), bytes: () => Buffer.concat(chunks) };
  };
  const batch = [notifyEnvelope('ch', '{ "a": 1 }', 1), notifyEnvelope('ch', 'two\nlines', 1), notifyEnvelope('ch', '', 1)];
  it('json: one envelope per line', async () => {
    const { sink, bytes } = make('json');
    await sink.send(batch, new AbortController().signal);
    const lines = bytes().toString().split('\n');
    expect(lines).toHaveLength(4);
    expect(JSON.parse(lines[0]!)).toEqual(envelopeJson(batch[0]!));
    expect(JSON.parse(lines[1]!).payload).toBe('two\nlines');
  });
  it('payload and payload0: the raw bytes followed by newline or NUL', async () => {
    const p = make('payload');
    await p.sink.send(batch, new AbortController().signal);
    expect(p.bytes().toString()).toBe('{ "a": 1 }\ntwo\nlines\n\n');
    const z = make('payload0');
    await z.sink.send(batch, new AbortController().signal);
    expect(z.bytes().toString()).toBe('{ "a": 1 }\0two\nlines\0\0');
  });
});
