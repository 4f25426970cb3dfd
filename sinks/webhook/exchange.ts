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
    const controllers = track(signal);
    let status = 0;
    let headers: Headers = {};
    const chunks: Buffer[] = [];
    let kept = 0;
    let total = 0;
    let cut = false;
    let controller: Dispatcher.DispatchController | undefined;
    const answer = () => ({ status, headers, snippet: decode(chunks) });
    const done = () => {
      if (controller) controllers.delete(controller);
    };
    agent.dispatch(options, {
      onRequestStart(c) {
        controller = c;
        if (signal.aborted) c.abort(signal.reason as Error);
        else controllers.add(c);
      },
      onResponseStart(_c, statusCode, responseHeaders) {
        status = statusCode;
        headers = responseHeaders as Headers;
      },
      onResponseData(c, chunk) {
        if (status >= 200 && status < 300) return;
        total += chunk.length;
        if (kept < SNIPPET_BYTES) {
          const part = chunk.subarray(0, SNIPPET_BYTES - kept);
          chunks.push(part);
          kept += part.length;
        }
        if (total > DRAIN_LIMIT) {
          cut = true;
          c.abort(new Error('error response body too large to drain'));
        }
      },
      onResponseEnd() {
        done();
        resolve(answer());
      },
      onResponseError(_c, error) {
        done();
        // Once the status is in, a body that breaks off (or is cut) does not change the answer.
        if (cut || (status !== 0 && !signal.aborted)) resolve(answer());
        else reject(error);
      },
    });
  });
}

function decode(chunks: readonly Buffer[]): string {
  if (chunks.length === 0) return '';
  return new TextDecoder('utf-8', { fatal: false }).decode(Buffer.concat(chunks)).replace(/\s+/g, ' ').trim();
}
