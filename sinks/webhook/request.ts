import { VERSION, type Envelope } from '../../src/sink-kit.js';
import { createFormatter, type Format } from './formats.js';
import { compileHeaders, type CompiledHeaders } from './headers.js';
import type { CloudEventsOptions } from '../../src/sink-kit.js';
import { compileUrl, type CompiledUrl } from './url.js';

/** One event's request, before the per-attempt headers (`webhook-timestamp`, `webhook-signature`). */
export interface WebhookRequest {
  readonly origin: string;
  /** Path and query, `{field}` values filled and URL-encoded. */
  readonly path: string;
  readonly headers: Record<string, string>;
  readonly body: string;
}

export interface RequestOptions {
  readonly url: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly format: Format;
  readonly cloudevents?: CloudEventsOptions | undefined;
}

export interface RequestBuilder {
  readonly url: CompiledUrl;
  readonly headers: CompiledHeaders;
  /** Pure: throws what the event's delivery fails with (TEMPLATE_FIELD_MISSING, a format error). */
  build(e: Envelope): WebhookRequest;
}

const USER_AGENT = `pg-sidekick/${VERSION}`;

/**
 * Everything a webhook request is made of that depends only on the options and the event: what the
 * sink sends and what `sidekick preview` prints come from this one function. Throws for bad options.
 */
export function createRequestBuilder(options: RequestOptions): RequestBuilder {
  const url = compileUrl(options.url);
  const headers = compileHeaders(options.headers, url.basicAuth);
  const render = createFormatter(options.format, { cloudEvents: options.cloudevents });
  return {
    url,
    headers,
    build(e) {
      const rendered = render(e);
      const path = url.path(e);
      const out: Record<string, string> = { 'user-agent': USER_AGENT, 'content-type': rendered.contentType, ...headers.render(e) };
      out['webhook-id'] = e.id;
      // Durable events: the outbox number, growing in commit order per key (dedupe on the id, order on this).
      if (e.seq !== undefined) out['webhook-seq'] = e.seq;
      return { origin: url.origin, path, headers: out, body: rendered.body };
    },
  };
}
