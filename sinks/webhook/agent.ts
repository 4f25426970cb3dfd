import type { ConnectionOptions } from 'node:tls';
import { Agent, EnvHttpProxyAgent, ProxyAgent, type Dispatcher } from 'undici';

/** The variables undici's EnvHttpProxyAgent reads (NO_PROXY only matters when one of these is set). */
const PROXY_VARIABLES = ['http_proxy', 'HTTP_PROXY', 'https_proxy', 'HTTPS_PROXY'];

export interface AgentOptions {
  /** `env` (HTTP_PROXY / HTTPS_PROXY / NO_PROXY), `none`, or a proxy URL. */
  readonly proxy: string;
  readonly connectTimeout: number;
  readonly tls: ConnectionOptions;
}

/**
 * One keep-alive connection pool per sink (undici pools per origin inside the agent). The number
 * of connections is not capped here: the dispatcher's `concurrency` already bounds the requests in
 * flight, and a cap below it would only queue them inside undici, out of sight of our timeouts.
 */
export function createAgent(options: AgentOptions): Dispatcher {
  const connect = { timeout: options.connectTimeout, ...options.tls };
  const common = {
    connect,
    // Keep idle connections long enough to span the gaps of a bursty event stream.
    keepAliveTimeout: 30_000,
    keepAliveMaxTimeout: 600_000,
  };
  if (options.proxy === 'none') return new Agent(common);
  // Through a proxy, the receiver's TLS settings apply to the tunnelled connection.
  const proxied = { ...common, requestTls: connect };
  if (options.proxy === 'env') {
    // Read once: with no proxy variable set, a plain agent (undici's env agent would look the
    // variables up again on every request).
    if (!PROXY_VARIABLES.some((name) => process.env[name])) return new Agent(common);
    return new EnvHttpProxyAgent(proxied);
  }
  return new ProxyAgent({ ...proxied, uri: options.proxy });
}
