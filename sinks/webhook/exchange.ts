import type { Dispatcher } from 'undici';
import { DRAIN_LIMIT, SNIPPET_BYTES } from './outcome.js';

type Headers = Record<string, string | string[] | undefined>;

/** An HTTP answer: its status and headers, and the start of the body when it is not a 2xx. */
export interface Answer {
  readonly status: number;
  readonly headers: Headers;
  readonly snippet: string;
}

/** Sends one request; see createExchange. */
export type Exchange = (options: Dispatcher.DispatchOptions, signal: AbortSignal) => Promise<Answer>;

/**
 * One request/response through undici's dispatch API with a handler of our own, instead of
 * `request()`: no response stream per request (a 2xx body is ignored as it arrives, an error body
 * keeps its first SNIPPET_BYTES), which is most of the client-side cost of a small webhook. An error
 * body over DRAIN_LIMIT is not read to the end: the connection is dropped instead. Rejects with
 * undici's error on network failures and timeouts, and with `signal.reason` once `signal` aborts.
 * One abort listener per signal for all requests in flight (not one per request: adding and
 * removing listeners on a signal shared by hundreds of requests costs more than the request).
 */
export function createExchange(agent: Dispatcher): Exchange {
  // Weak: a caller may pass a fresh signal per call; its entry goes with it.
  const inFlight = new WeakMap<AbortSignal, Set<Dispatcher.DispatchController>>();
  function track(signal: AbortSignal): Set<Dispatcher.DispatchController> {
    let set = inFlight.get(signal);
    if (!set) {
      const controllers = new Set<Dispatcher.DispatchController>();
      set = controllers;
      inFlight.set(signal, controllers);
      signal.addEventListener('abort', () => {
        for (const c of controllers) c.abort(signal.reason as Error);
      }, { once: true });
    }
    return set;
  }
  return (options, signal) => new Promise((resolve, reject) => {
    agent.dispatch(options, new Handler(track(signal), signal, resolve, reject));
  });
}

/** The callbacks of one exchange (a class: one object per request, no closures). */
class Handler implements Dispatcher.DispatchHandler {
  private status = 0;
  private headers: Headers = {};
  private readonly chunks: Buffer[] = [];
  private kept = 0;
  private total = 0;
  private cut = false;
  private controller: Dispatcher.DispatchController | undefined;

  constructor(
    private readonly controllers: Set<Dispatcher.DispatchController>,
    private readonly signal: AbortSignal,
    private readonly resolve: (answer: Answer) => void,
    private readonly reject: (error: Error) => void,
  ) {}

  onRequestStart(c: Dispatcher.DispatchController): void {
    this.controller = c;
    if (this.signal.aborted) c.abort(this.signal.reason as Error);
    else this.controllers.add(c);
  }

  onResponseStart(_c: Dispatcher.DispatchController, statusCode: number, headers: Headers): void {
    this.status = statusCode;
    this.headers = headers;
  }

  onResponseData(c: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.status >= 200 && this.status < 300) return;
    this.total += chunk.length;
    if (this.kept < SNIPPET_BYTES) {
      const part = chunk.subarray(0, SNIPPET_BYTES - this.kept);
      this.chunks.push(part);
      this.kept += part.length;
    }
    if (this.total > DRAIN_LIMIT) {
      this.cut = true;
      c.abort(new Error('error response body too large to drain'));
    }
  }

  onResponseEnd(): void {
    this.done();
    this.resolve(this.answer());
  }

  onResponseError(_c: Dispatcher.DispatchController, error: Error): void {
    this.done();
    // Once the status is in, a body that breaks off (or is cut) does not change the answer.
    if (this.cut || (this.status !== 0 && !this.signal.aborted)) this.resolve(this.answer());
    else this.reject(error);
  }

  private done(): void {
    if (this.controller) this.controllers.delete(this.controller);
  }

  private answer(): Answer {
    return { status: this.status, headers: this.headers, snippet: decode(this.chunks) };
  }
}

function decode(chunks: readonly Buffer[]): string {
  if (chunks.length === 0) return '';
  return new TextDecoder('utf-8', { fatal: false }).decode(Buffer.concat(chunks)).replace(/\s+/g, ' ').trim();
}
