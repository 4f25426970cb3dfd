import { z } from 'zod';
import { defineSink, envelopeJson, FatalError, OK, payloadText, type Envelope, type SendResult } from '../../src/sink-kit.js';

/**
 * `type: stdout` — writes events to standard output.
 *
 * ```yaml
 * sinks:
 *   console: { type: stdout, format: json }   # json (default) | payload | payload0
 * ```
 * - `json`: one envelope per line (JSON).
 * - `payload`: the raw NOTIFY payload followed by "\n" (pglisten's output).
 * - `payload0`: the raw payload followed by NUL (pglisten --print0), safe for `xargs -0`.
 */
export const stdoutSink = defineSink({
  type: 'stdout',
  description: 'write events to standard output (json lines, or raw payloads like pglisten)',
  options: {
    /** json (default) | payload | payload0 */
    format: z.enum(['json', 'payload', 'payload0']).default('json'),
  },
  defaults: { concurrency: 1, batchSize: 1000 },
  create(options, context) {
    const out = context.stdout ?? process.stdout;
    // A route's transform shaped the event (docs/shaping.md): its result (JSON, or a string as it is) replaces the envelope and the payload.
    const line =
      options.format === 'json'
        ? (e: Envelope) => `${e.body === undefined ? JSON.stringify(envelopeJson(e)) : e.body.text}\n`
        : options.format === 'payload'
          ? (e: Envelope) => `${e.body === undefined ? payloadText(e) : e.body.text}\n`
          : (e: Envelope) => `${e.body === undefined ? payloadText(e) : e.body.text}\0`;
    let closed: Error | undefined;
    const onError = (error: Error) => {
      closed = error;
    };
    return {
      name: context.name,
      type: 'stdout',
      ordered: true,
      async start() {
        out.on('error', onError);
      },
      async send(batch, signal): Promise<SendResult> {
        if (closed) throw new FatalError('STDOUT_CLOSED', `standard output is closed: ${closed.message}`);
        let text = '';
        for (const e of batch) text += line(e);
        if (!out.write(text)) {
          // Respect backpressure: a slow reader slows us instead of growing memory.
          await new Promise<void>((resolve) => {
            const done = () => {
              out.off('drain', done);
              signal.removeEventListener('abort', done);
              resolve();
            };
            out.once('drain', done);
            signal.addEventListener('abort', done, { once: true });
          });
        }
        if (closed) throw new FatalError('STDOUT_CLOSED', `standard output is closed: ${(closed as Error).message}`);
        return batch.map(() => OK);
      },
      async stop() {
        out.off('error', onError);
      },
      async check() {
        return 'standard output';
      },
    };
  },
});
