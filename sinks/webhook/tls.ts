import { readFileSync } from 'node:fs';
import type { ConnectionOptions } from 'node:tls';

/** The `tls:` block of a webhook sink, as validated by its schema. */
export interface TlsOptions {
  readonly ca?: string | readonly string[] | undefined;
  readonly cert?: string | undefined;
  readonly key?: string | undefined;
  readonly passphrase?: string | undefined;
  readonly rejectUnauthorized: boolean;
  readonly servername?: string | undefined;
}

/** A value is inline PEM when it contains a PEM header; otherwise it is a file to read. */
function pem(value: string, key: string): string {
  if (value.includes('-----BEGIN ')) return value;
  try {
    return readFileSync(value, 'utf8');
  } catch (error) {
    throw new Error(`tls.${key}: cannot read file ${value}: ${(error as Error).message}`);
  }
}

/**
 * Turns the `tls:` options into Node TLS connection options, reading files once, at start-up: a
 * missing certificate is a configuration error, not something to discover on the first event.
 */
export function loadTls(tls: TlsOptions | undefined): ConnectionOptions {
  if (!tls) return {};
  const out: ConnectionOptions = { rejectUnauthorized: tls.rejectUnauthorized };
  if (tls.ca !== undefined) {
    const list = typeof tls.ca === 'string' ? [tls.ca] : tls.ca;
    out.ca = list.map((c, i) => pem(c, list.length > 1 ? `ca[${i}]` : 'ca'));
  }
  if (tls.cert !== undefined) out.cert = pem(tls.cert, 'cert');
  if (tls.key !== undefined) out.key = pem(tls.key, 'key');
  if ((out.cert === undefined) !== (out.key === undefined)) {
    throw new Error('tls: a client certificate needs both cert and key');
  }
  if (tls.passphrase !== undefined) out.passphrase = tls.passphrase;
  if (tls.servername !== undefined) out.servername = tls.servername;
  return out;
}
