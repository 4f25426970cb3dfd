import { createHmac, createSecretKey } from 'node:crypto';

/**
 * Standard Webhooks signing (https://www.standardwebhooks.com): the signed content is
 * `${webhook-id}.${webhook-timestamp}.${body}`, signed with HMAC-SHA256, sent as
 * `webhook-signature: v1,<base64>`; several secrets (key rotation) give several space-separated
 * signatures, and a receiver accepts the request if any of them verifies.
 */

const PREFIX = 'whsec_';
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{2,3})?$/;

/**
 * The key bytes of a secret: `whsec_<base64>` is decoded (the form Standard Webhooks libraries
 * generate and expect); anything else is used as raw UTF-8 bytes. Throws a message that never
 * repeats the secret.
 */
export function secretKey(secret: string): Buffer {
  if (secret.startsWith(PREFIX)) {
    const encoded = secret.slice(PREFIX.length);
    if (encoded === '' || !BASE64.test(encoded)) {
      throw new Error('a secret starting with "whsec_" must be base64 after the prefix (or drop the prefix to use the string as is)');
    }
    return Buffer.from(encoded, 'base64');
  }
  if (secret === '') throw new Error('a secret must not be empty');
  return Buffer.from(secret, 'utf8');
}

export type Signer = (id: string, timestamp: number, body: string) => string;

/** Returns a function computing the `webhook-signature` header value for every secret given. */
export function createSigner(secrets: readonly string[]): Signer {
  // Key objects made once: a Buffer key is imported again by every createHmac.
  const keys = secrets.map((secret) => createSecretKey(secretKey(secret)));
  return (id, timestamp, body) => {
    const prefix = `${id}.${timestamp}.`;
    let header = '';
    for (const key of keys) {
      if (header !== '') header += ' ';
      // (Fed in two parts: no copy of the body into one signed string.)
      header += `v1,${createHmac('sha256', key).update(prefix, 'utf8').update(body, 'utf8').digest('base64')}`;
    }
    return header;
  };
}
