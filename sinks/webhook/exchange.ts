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
 * keeps its first SNIPPET_BYTES), which is most of the client-side cost of a small webhook.
 * Rejects with undici's error on network failures and timeouts, and with `signal.reason` once
 * `signal` aborts. One abort listener per signal for all requests in flight (not one per request:
 * adding and removing listeners on a signal shared by hundreds of requests costs more than the
 * request).
 *
 * Once the status is in, the receiver has answered, and its body cannot hold the request: a body
 * over DRAIN_LIMIT, or still arriving `bodyTimeout` after the status (undici's own body timeout only
 * bounds the pause between chunks, so a byte now and then could last forever), is not read further —
 * the connection is dropped and the status stands. One timer per exchange checks the second bound,
 * running only while some body is being read.
 */
export function createExchange(agent: Dispatcher, bodyTimeout: number): Exchange {
  // Weak: a caller may pass a fresh signal per call; its entry goes with it.
  const inFlight = new WeakMap<AbortSignal, Set<Dispatcher.DispatchController>>();
  function track(signal: AbortSignal): Set<Dispatcher.DispatchController> {
    let set = inFlight.get(signal);
    if (!set) {
      const controllers = new Set<Dispatcher.DispatchController>();
      set = controllers;
      inFlight.set(signal, controllers);
      signal.addEventListener(
        'abort',
        () => {
          for (const c of controllers) c.abort(signal.reason as Error);
        },
        { once: true },
      );
    }
    return set;
  }
  const bodies: Bodies = { reading: new Set(), timer: undefined, limit: bodyTimeout };
  return (options, signal) =>
    new Promise((resolve, reject) => {
      agent.dispatch(options, new Handler(track(signal), bodies, signal, resolve, reject));
    });
}

/** Responses whose status is in and whose body is still coming, and the timer that bounds them. */
interface Bodies {
  readonly reading: Set<Handler>;
  timer: NodeJS.Timeout | undefined;
  readonly limit: number;
}

function watchBodies(bodies: Bodies): void {
  if (bodies.timer) return;
  const every = Math.max(20, Math.min(1000, Math.floor(bodies.limit / 4)));
  bodies.timer = setInterval(() => {
    if (bodies.reading.size === 0) {
      clearInterval(bodies.timer);
      bodies.timer = undefined;
      return;
    }
    const now = Date.now();
    for (const h of bodies.reading) h.expire(now);
  }, every);
  bodies.timer.unref();
}

/** The callbacks of one exchange (a class: one object per request, no closures). */
class Handler implements Dispatcher.DispatchHandler {
  private status = 0;
  private headers: Headers = {};
  private readonly chunks: Buffer[] = [];
  private kept = 0;
  private total = 0;
  private cut = false;
  private statusAt = 0;
  private controller: Dispatcher.DispatchController | undefined;

  constructor(
    private readonly controllers: Set<Dispatcher.DispatchController>,
    private readonly bodies: Bodies,
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
    this.statusAt = Date.now();
    this.bodies.reading.add(this);
    watchBodies(this.bodies);
  }

  /** Called by the body timer: a body read for longer than the limit is cut (the status stands). */
  expire(now: number): void {
    if (now - this.statusAt <= this.bodies.limit || this.cut) return;
    this.cut = true;
    this.controller?.abort(new Error(`response body still arriving ${this.bodies.limit} ms after the status`));
  }

  onResponseData(c: Dispatcher.DispatchController, chunk: Buffer): void {
    this.total += chunk.length;
    // A 2xx body is read and dropped; an error body keeps its start for the message.
    if (this.kept < SNIPPET_BYTES && (this.status < 200 || this.status >= 300)) {
      const part = chunk.subarray(0, SNIPPET_BYTES - this.kept);
      this.chunks.push(part);
      this.kept += part.length;
    }
    if (this.total > DRAIN_LIMIT) {
      this.cut = true;
      c.abort(new Error(`response body over ${DRAIN_LIMIT} bytes: not read further`));
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
    this.bodies.reading.delete(this);
  }

  private answer(): Answer {
    return { status: this.status, headers: this.headers, snippet: decode(this.chunks) };
  }
}

function decode(chunks: readonly Buffer[]): string {
  if (chunks.length === 0) return '';
  return new TextDecoder('utf-8', { fatal: false }).decode(Buffer.concat(chunks)).replace(/\s+/g, ' ').trim();
}
