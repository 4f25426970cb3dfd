import type { Dispatcher } from 'undici';
import {
  ConfigError,
  defineSink,
  FatalError,
  OK,
  SidekickError,
  VERSION,
  type Envelope,
  type ItemOutcome,
  type SendResult,
} from '../../src/sink-kit.js';
import { createAgent } from './agent.js';
import { createFormatter, type Rendered } from './formats.js';
import { webhookOptions } from './options.js';
import { createExchange, type Answer } from './exchange.js';
import { networkError, statusOutcome } from './outcome.js';
import { createSigner } from './signing.js';
import { loadTls } from './tls.js';
import { compileUrl } from './url.js';

/** Redirects followed when `followRedirects: true`. */
const DEFAULT_MAX_REDIRECTS = 5;
/** A one-event batch's outcomes. */
const alone = (outcome: ItemOutcome): SendResult => [outcome];
/** How long stop() lets in-flight requests finish before cutting the connections. */
const CLOSE_GRACE_MS = 5_000;

/**
 * `type: webhook` — POSTs each event to an HTTP endpoint (the skor replacement).
 *
 * ```yaml
 * sinks:
 *   orders-hook:
 *     type: webhook
 *     url: https://example.com/hooks/{schema}/{table}
 *     headers: { Authorization: "Bearer ${HOOK_TOKEN}" }
 *     format: envelope          # envelope | payload | skor | cloudevents
 *     secret: ${HOOK_SECRET}    # Standard Webhooks signing; a list for rotation
 *     timeout: 10s
 *     concurrency: 32
 *     retry: { attempts: 10, initialDelay: 500ms, maxDelay: 5m, maxAge: 24h }
 * ```
 *
 * One request per event over a keep-alive pool; `concurrency` requests in flight. 2xx = delivered;
 * 408, 425, 429, 5xx and network failures are retried by the dispatcher (honouring Retry-After);
 * any other status is fatal (dead letter, with the status and the start of the body). Every request
 * carries `webhook-id` (the event id, the same on every retry) and `webhook-timestamp`, and
 * `webhook-signature` when a secret is set; durable events also `webhook-seq` (their order per key).
 */
export const webhookSink = defineSink({
  type: 'webhook',
  description: 'POST events to an HTTP endpoint (Standard Webhooks signing, retries, per-key order)',
  options: webhookOptions,
  // One event per request, so `concurrency` is exactly the number of requests in flight.
  defaults: { concurrency: 32, batchSize: 1 },
  create(options, context) {
    const where = `sink "${context.name}"`;
    let url: ReturnType<typeof compileUrl>;
    let agent: Dispatcher;
    try {
      url = compileUrl(options.url);
      agent = createAgent({ proxy: options.proxy, connectTimeout: options.timeout.connect, tls: loadTls(options.tls) });
    } catch (error) {
      throw new ConfigError(`${where}: ${(error as Error).message}`, { cause: error });
    }
    const { method } = options;
    const render = createFormatter(options.format, { cloudEvents: options.cloudevents });
    const sign = options.secret ? createSigner(options.secret) : undefined;
    const maxRedirects = options.followRedirects === true ? DEFAULT_MAX_REDIRECTS : options.followRedirects || 0;
    const { headers: headersTimeout, body: bodyTimeout } = options.timeout;

    // Header names are case-insensitive; lower-casing them lets configured ones replace ours cleanly.
    const configured: Record<string, string> = {};
    if (url.basicAuth) configured.authorization = url.basicAuth;
    for (const [name, value] of Object.entries(options.headers)) configured[name.toLowerCase()] = value;
    const configuredNames = Object.keys(configured);
    const exchange = createExchange(agent, bodyTimeout);
    const userAgent = `pg-sidekick/${VERSION}`;

    /** The request, for messages (without its query string). */
    const what = (origin: string, path: string) => `${method} ${origin}${path.split('?')[0]}`;

    async function deliver(e: Envelope, signal: AbortSignal): Promise<ItemOutcome> {
      let rendered: Rendered;
      let path: string;
      try {
        rendered = render(e);
        path = url.path(e);
      } catch (error) {
        // Another attempt would fail the same way (a template field the event lacks keeps its own
        // code, TEMPLATE_FIELD_MISSING; e.g. a lone surrogate that cannot be URL-encoded).
        if (error instanceof SidekickError) return { ok: false, error };
        return {
          ok: false,
          error: new FatalError('WEBHOOK_FORMAT', `event ${e.id} cannot be turned into a ${options.format} request: ${(error as Error).message}`, {
            cause: error,
          }),
        };
      }
      // A fresh timestamp per attempt (receivers reject stale ones); the id stays the event's.
      const timestamp = Math.floor(Date.now() / 1000);
      let headers: Record<string, string> = {
        'user-agent': userAgent,
        'content-type': rendered.contentType,
      };
      for (const name of configuredNames) headers[name] = configured[name] as string;
      headers['webhook-id'] = e.id;
      // Durable events: the outbox number, growing in commit order per key (dedupe on the id, order on this).
      if (e.seq !== undefined) headers['webhook-seq'] = e.seq;
      headers['webhook-timestamp'] = String(timestamp);
      if (sign) headers['webhook-signature'] = sign(e.id, timestamp, rendered.body);

      let origin = url.origin;
      for (let hop = 0; ; hop++) {
        let answer: Answer;
        try {
          answer = await exchange({ origin, path, method, headers, body: rendered.body, headersTimeout, bodyTimeout }, signal);
        } catch (error) {
          if (signal.aborted) throw signal.reason ?? error;
          return { ok: false, error: networkError(error, what(origin, path)) };
        }
        const status = answer.status;
        if (status >= 200 && status < 300) return OK;
        const location = answer.headers.location;
        if ((status === 307 || status === 308) && hop < maxRedirects && typeof location === 'string') {
          let next: URL;
          try {
            next = new URL(location, `${origin}${path}`);
          } catch {
            return { ok: false, error: new FatalError(`HTTP_${status}`, `${what(origin, path)} redirected to an invalid location`) };
          }
          if (next.protocol !== 'https:' && (next.protocol !== 'http:' || origin.startsWith('https:'))) {
            return {
              ok: false,
              error: new FatalError(
                `HTTP_${status}`,
                `${what(origin, path)} redirected to ${next.protocol}//${next.host}: refused (only http(s), never https to http)`,
              ),
            };
          }
          if (next.origin !== origin) {
            // Configured credentials are for the configured receiver, not wherever it points us.
            headers = Object.fromEntries(Object.entries(headers).filter(([name]) => name === 'content-type' || !(name in configured)));
          }
          origin = next.origin;
          path = `${next.pathname}${next.search}`;
          continue;
        }
        return statusOutcome(status, answer.headers, answer.snippet, what(origin, path));
      }
    }

    let stopping: Promise<void> | undefined;
    return {
      name: context.name,
      type: 'webhook',
      async start() {
        context.logger.info(
          {
            url: url.display,
            method,
            format: options.format,
            signed: options.secret?.length ?? 0,
            proxy: /^https?:/.test(options.proxy) ? 'url' : options.proxy,
          },
          'webhook sink ready',
        );
      },
      send(batch, signal): Promise<SendResult> {
        if (signal.aborted) return Promise.reject(signal.reason);
        if (batch.length === 1) return deliver(batch[0] as Envelope, signal).then(alone);
        return Promise.all(batch.map((e) => deliver(e, signal)));
      },
      stop() {
        stopping ??= (async () => {
          let timer: NodeJS.Timeout | undefined;
          const graceOver = new Promise<boolean>((resolve) => {
            timer = setTimeout(() => resolve(false), CLOSE_GRACE_MS);
          });
          const closed = await Promise.race([agent.close().then(() => true), graceOver]);
          clearTimeout(timer);
          if (!closed) await agent.destroy();
        })();
        return stopping;
      },
      async check(signal) {
        // HEAD the fixed part of the URL: proves DNS, proxy, TLS and that an HTTP server answers,
        // without delivering anything. Any status counts as reachable.
        const path = url.display.slice(url.origin.length).split('{')[0] || '/';
        const what = `HEAD ${url.origin}${path}`;
        try {
          const response = await agent.request({
            origin: url.origin,
            path,
            method: 'HEAD',
            headers: { 'user-agent': userAgent, ...configured },
            signal,
            headersTimeout,
            bodyTimeout,
          });
          await response.body.dump().catch(() => undefined);
          return `${url.display} reachable (HEAD answered ${response.statusCode})`;
        } catch (error) {
          throw networkError(error, what);
        }
      },
    };
  },
});
