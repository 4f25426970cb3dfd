import { Writable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import type { Envelope } from '../../src/envelope.js';
import { classifyError, RetriableError } from '../../src/errors.js';
import { createLogger } from '../../src/logger.js';
import type { Sink, SinkContext } from '../../src/sink.js';

/**
 * The shared sink contract. Every sink's test file calls `sinkContract({...})` with factories for a
 * sink whose destination works (a real server/broker), one whose destination is unreachable, and,
 * where the sink has such a thing, a batch that must fail fatally.
 */
export interface ContractSubject {
  readonly name: string;
  /** A fresh sink pointed at a working destination. */
  create(): Sink | Promise<Sink>;
  /** Ids of the envelopes the destination received (read back independently of the sink). */
  received(): Promise<readonly string[]>;
  /** A fresh sink pointed at a destination that refuses connections: sends must fail retriably. */
  createUnreachable?(): Sink | Promise<Sink>;
  /** A sink + batch where the items at `fatal` must fail with a non-retriable error, the rest succeed. */
  fatalCase?(): Promise<{ sink: Sink; batch: readonly Envelope[]; fatal: readonly number[] }>;
}

export const quietLogger = createLogger({ level: 'silent', destination: new Writable({ write: (_c, _e, cb) => cb() }) });

export function contractContext(name: string, extra: Partial<SinkContext> = {}): SinkContext {
  return { name, logger: quietLogger, database: {}, ...extra };
}

let seq = 0;
export function testEnvelope(over: Partial<Envelope> = {}): Envelope {
  seq++;
  const id = `contract-${process.pid}-${Date.now()}-${seq}`;
  return {
    id,
    source: 'table',
    channel: 'public.contract',
    op: 'INSERT',
    schema: 'public',
    table: 'contract',
    key: String(seq),
    new: { id: seq, note: 'ünïcode ✓' },
    old: null,
    payload: undefined,
    at: new Date().toISOString(),
    txid: '1',
    ...over,
  };
}

export function sinkContract(subject: ContractSubject): void {
  describe(`sink contract: ${subject.name}`, () => {
    const open: Sink[] = [];
    const track = async (s: Sink | Promise<Sink>) => {
      const sink = await s;
      open.push(sink);
      return sink;
    };
    afterEach(async () => {
      await Promise.all(open.splice(0).map((s) => s.stop().catch(() => {})));
    });

    it('start → send → stop delivers every envelope with one outcome each, in order', async () => {
      const sink = await track(subject.create());
      await sink.start(new AbortController().signal);
      const batch = [testEnvelope(), testEnvelope(), testEnvelope()];
      const result = await sink.send(batch, new AbortController().signal);
      expect(result).toHaveLength(batch.length);
      expect(result.every((o) => o.ok)).toBe(true);
      await sink.stop();
      const got = await subject.received();
      for (const e of batch) expect(got).toContain(e.id);
    });

    it('stop() twice is fine, and stop() without start() too', async () => {
      const sink = await track(subject.create());
      await sink.start(new AbortController().signal);
      await sink.stop();
      await sink.stop();
      const never = await track(subject.create());
      await never.stop();
    });

    it('honours an aborted signal: send returns or rejects promptly', async () => {
      const sink = await track(subject.create());
      await sink.start(new AbortController().signal);
      const controller = new AbortController();
      controller.abort(new Error('test abort'));
      const started = Date.now();
      await sink.send([testEnvelope()], controller.signal).catch(() => undefined);
      expect(Date.now() - started).toBeLessThan(5_000);
    });

    if (subject.createUnreachable) {
      it('classifies an unreachable destination as retriable', async () => {
        const sink = await track(subject.createUnreachable!());
        const controller = new AbortController();
        let error: unknown;
        try {
          await sink.start(controller.signal);
          const result = await sink.send([testEnvelope()], controller.signal);
          error = result[0]?.ok === false ? result[0].error : undefined;
        } catch (e) {
          error = e;
        }
        expect(error, 'start or send must fail').toBeDefined();
        // What the dispatcher makes of it (a SidekickError as it is, anything else through the network
        // table): retriable, and unavailable — a refused connection means the destination is not
        // there, so the sink backs off as a whole instead of using up the events' attempts.
        const classified = classifyError(error);
        expect(classified, String(error)).toBeInstanceOf(RetriableError);
        expect((classified as RetriableError).unavailable, `${classified.code}: ${classified.message}`).toBe(true);
      });
    }

    if (subject.fatalCase) {
      it('reports per-item outcomes: fatal items fail non-retriably, the others succeed', async () => {
        const { sink, batch, fatal } = await subject.fatalCase!();
        open.push(sink);
        await sink.start(new AbortController().signal);
        const result = await sink.send(batch, new AbortController().signal);
        expect(result).toHaveLength(batch.length);
        result.forEach((o, i) => {
          if (fatal.includes(i)) {
            expect(o.ok, `item ${i} should fail`).toBe(false);
            if (!o.ok) expect(o.error.retriable).toBe(false);
          } else {
            expect(o.ok, `item ${i} should succeed`).toBe(true);
          }
        });
      });
    }
  });
}
