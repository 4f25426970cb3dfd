import { z } from 'zod';
import { cloudEventsShape, duration } from '../../src/sink-kit.js';
import { FORMATS } from './formats.js';
import { secretKey } from './signing.js';
import { compileUrl } from './url.js';

const DEFAULT_TIMEOUT = 10_000;
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** Headers the sink owns: letting config override them would break signing, framing or routing. */
const RESERVED_HEADERS = new Set([
  'webhook-id',
  'webhook-timestamp',
  'webhook-signature',
  'webhook-seq',
  'content-length',
  'host',
  'transfer-encoding',
  'connection',
]);

/** Runs a validator that throws, turning its message into a schema issue. */
function check<T>(validate: (value: T) => unknown) {
  return (value: T, ctx: z.RefinementCtx) => {
    try {
      validate(value);
    } catch (error) {
      ctx.addIssue({ code: 'custom', message: (error as Error).message });
    }
  };
}

const pemValue = z.string().min(1);

/**
 * The options of `type: webhook` (besides the common `retry`, `concurrency`, `batch`, `maxQueued`).
 * Every value may use `${ENV}` interpolation; secrets and header values never appear in logs.
 */
export const webhookOptions = {
  /**
   * Where to send events: an http(s) URL; `{schema}`, `{table}`, `{channel}`, `{op}`, `{key}`,
   * `{id}`, `{source}` in the path or query are filled from the event, URL-encoded. Required.
   */
  url: z.string().min(1).superRefine(check(compileUrl)),
  /** POST (default) | PUT | PATCH. */
  method: z.enum(['POST', 'PUT', 'PATCH']).default('POST'),
  /** Extra request headers, e.g. `Authorization: Bearer ${TOKEN}`. Values are never logged. Default none. */
  headers: z
    .record(z.string().regex(TOKEN, 'not a valid header name'), z.string())
    .superRefine(
      check((h: Record<string, string>) => {
        for (const name of Object.keys(h)) {
          if (RESERVED_HEADERS.has(name.toLowerCase())) throw new Error(`header ${name} is set by the sink and cannot be configured`);
        }
      }),
    )
    .default({}),
  /** envelope (default: the event's JSON) | payload (the NOTIFY payload verbatim) | skor | cloudevents. */
  format: z.enum(FORMATS).default('envelope'),
  /**
   * Standard Webhooks signing secret(s): `whsec_<base64>` or a raw string. A list signs with every
   * secret (one `v1,` signature each), for key rotation. Default: requests are not signed.
   */
  secret: z
    .union([z.string(), z.array(z.string()).min(1)])
    .transform((s) => (typeof s === 'string' ? [s] : s))
    .superRefine(
      check((list: string[]) => {
        for (const s of list) secretKey(s);
      }),
    )
    .optional(),
  /**
   * How long to wait: one duration for connecting, for the response headers and for the response
   * body (between chunks, and in all from the status on), or `{ connect, headers, body }` separately
   * (each defaults to 10s). Default 10s.
   */
  timeout: z
    .union([
      duration.transform((t) => ({ connect: t, headers: t, body: t })),
      z.strictObject({
        connect: duration.default(DEFAULT_TIMEOUT),
        headers: duration.default(DEFAULT_TIMEOUT),
        body: duration.default(DEFAULT_TIMEOUT),
      }),
    ])
    .prefault(DEFAULT_TIMEOUT),
  /**
   * false (default): a 3xx answer is a failure (dead-lettered, the URL needs fixing). true: follow up
   * to 5 redirects; a number: up to that many. Only 307 and 308 are followed (they keep the method
   * and body); credentials are not sent to another origin, and https never downgrades to http.
   */
  followRedirects: z.union([z.boolean(), z.number().int().min(1).max(20)]).default(false),
  /** TLS to the receiver: `ca` (one or a list), `cert`, `key`: file paths or inline PEM. */
  tls: z
    .strictObject({
      /** Extra trusted CA(s), replacing the system list. Default: the system CAs. */
      ca: z.union([pemValue, z.array(pemValue).min(1)]).optional(),
      /** Client certificate (mutual TLS); needs `key`. */
      cert: pemValue.optional(),
      /** Client certificate key. */
      key: pemValue.optional(),
      /** Passphrase of an encrypted key. */
      passphrase: z.string().optional(),
      /** Verify the receiver's certificate. Default true; false is for tests only. */
      rejectUnauthorized: z.boolean().default(true),
      /** SNI / certificate host name, when it differs from the URL's host. */
      servername: z.string().optional(),
    })
    .optional(),
  /**
   * `env` (default): HTTP_PROXY / HTTPS_PROXY / NO_PROXY, like curl; `none`: connect directly;
   * or a proxy URL (`http://user:pass@proxy:3128`).
   */
  proxy: z
    .string()
    .default('env')
    .superRefine(
      check((p: string) => {
        if (p === 'env' || p === 'none') return;
        if (!/^https?:\/\/[^/]+/i.test(p)) throw new Error('must be env, none, or an http(s):// proxy URL');
        new URL(p);
      }),
    ),
  /** `format: cloudevents` only: the `source` and `type` templates (docs/cloudevents.md). */
  cloudevents: z.strictObject(cloudEventsShape).prefault({}),
};

export type WebhookOptions = z.infer<z.ZodObject<typeof webhookOptions>>;
