import { compileTemplate, type Envelope } from '../../src/sink-kit.js';

export interface CompiledUrl {
  /** scheme://host[:port] — fixed for the sink, so one connection pool serves every event. */
  readonly origin: string;
  /** Path and query for one event, `{field}` values URL-encoded. */
  path(e: Envelope): string;
  /** `Basic …` from credentials written in the URL (`https://user:pass@host/`), if any. */
  readonly basicAuth: string | undefined;
  /** The URL for messages and logs: no credentials, no query string (either may hold a token). */
  readonly display: string;
}

/**
 * Compiles the `url:` of a webhook sink. `{schema}`, `{table}`, `{channel}`, `{op}`, `{key}`, `{id}`
 * and `{source}` are filled from each envelope and URL-encoded, so a key such as `a/b?c` cannot
 * change the path. Placeholders are refused in the scheme, host and port: a database role that can
 * NOTIFY must not be able to choose which server the bridge talks to.
 */
export function compileUrl(template: string): CompiledUrl {
  const match = /^(https?):\/\/([^/?#]*)(.*)$/i.exec(template);
  if (!match) throw new Error(`must be an http:// or https:// URL (got "${template.slice(0, 80)}")`);
  const [, scheme, authority, rest] = match as unknown as [string, string, string, string];
  if (authority.includes('{') || authority.includes('}')) {
    throw new Error('placeholders are allowed in the path and query only, not in the host');
  }
  let basicAuth: string | undefined;
  let host = authority;
  const at = authority.lastIndexOf('@');
  if (at >= 0) {
    const userinfo = authority.slice(0, at);
    host = authority.slice(at + 1);
    const colon = userinfo.indexOf(':');
    const user = decodeURIComponent(colon >= 0 ? userinfo.slice(0, colon) : userinfo);
    const password = colon >= 0 ? decodeURIComponent(userinfo.slice(colon + 1)) : '';
    basicAuth = `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
  }
  if (host === '') throw new Error('has no host');
  let origin: string;
  try {
    origin = new URL(`${scheme.toLowerCase()}://${host}`).origin;
  } catch {
    throw new Error(`has an invalid host "${host}"`);
  }
  // The fragment is never sent to a server.
  let pathTemplate = rest.split('#')[0] as string;
  if (pathTemplate === '' || pathTemplate.startsWith('?')) pathTemplate = `/${pathTemplate}`;
  // A field the event lacks fails that event (TEMPLATE_FIELD_MISSING), never posts to `…//`.
  const path = compileTemplate(pathTemplate, encodeURIComponent, { name: 'url' });
  try {
    new URL(`${origin}${pathTemplate.replace(/\{[^{}]*\}/g, 'x')}`);
  } catch {
    throw new Error('is not a valid URL');
  }
  const display = `${origin}${pathTemplate.split('?')[0] as string}`;
  return { origin, path, basicAuth, display };
}
