import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { errorMessage, SidekickError } from './errors.js';

/** What /readyz reports: `ready` is true only when every check is. */
export interface Readiness {
  readonly ready: boolean;
  readonly checks: Readonly<Record<string, boolean>>;
}

export interface HttpServer {
  /** Binds host:port. Rejects with a clear message when the address cannot be used (e.g. in use). */
  start(): Promise<void>;
  /** Closes the listening socket and every open connection. Idempotent. */
  stop(): Promise<void>;
  /** The bound address (port 0 in config means "any free port": this says which). */
  address(): { host: string; port: number } | undefined;
}

/**
 * The operations endpoint: `/metrics` (Prometheus text format), `/healthz` (200 while the process
 * runs its event loop), `/readyz` (200 when every readiness check passes, 503 naming the failing
 * ones otherwise). Plain node:http: three GET routes do not need a framework.
 */
export function createHttpServer(params: { host: string; port: number; registry: Registry; readiness: () => Readiness; logger: Logger }): HttpServer {
  const { registry, readiness } = params;
  const logger = params.logger.child({ component: 'http' });
  let stopped: Promise<void> | undefined;
  let scrapeErrorsLogged = 0;

  const server = createServer((req, res) => {
    handle(req, res).catch((error) => {
      // handle() answers its own errors; this is the last resort (e.g. the socket went away).
      logger.warn({ err: errorMessage(error), path: req.url }, 'HTTP request failed');
      if (!res.headersSent) send(res, 500, 'text/plain; charset=utf-8', 'internal error\n');
      else res.destroy();
    });
  });
  // Probes and scrapers use short keep-alive connections; do not let a silent one linger forever.
  server.keepAliveTimeout = 5_000;
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    const known = path === '/metrics' || path === '/healthz' || path === '/readyz';
    if (!known) return send(res, 404, 'text/plain; charset=utf-8', 'not found: try /metrics, /healthz or /readyz\n');
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD');
      return send(res, 405, 'text/plain; charset=utf-8', 'method not allowed\n');
    }
    if (path === '/healthz') return send(res, 200, 'text/plain; charset=utf-8', 'ok\n');
    if (path === '/readyz') {
      const state = readiness();
      const failing = Object.entries(state.checks)
        .filter(([, ok]) => !ok)
        .map(([name]) => name);
      const body = JSON.stringify({ ready: state.ready, checks: state.checks, ...(state.ready ? {} : { failing }) });
      return send(res, state.ready ? 200 : 503, 'application/json', `${body}\n`);
    }
    let text: string;
    try {
      text = await registry.metrics();
    } catch (error) {
      // A collector that throws must not hide the reason; log the first few, answer 500.
      if (scrapeErrorsLogged++ < 5) logger.error({ err: errorMessage(error) }, 'collecting metrics failed');
      return send(res, 500, 'text/plain; charset=utf-8', `collecting metrics failed: ${errorMessage(error)}\n`);
    }
    return send(res, 200, registry.contentType, text);
  }

  function send(res: ServerResponse, status: number, type: string, body: string): void {
    res.statusCode = status;
    res.setHeader('Content-Type', type);
    res.setHeader('Cache-Control', 'no-store');
    res.setHeader('Content-Length', Buffer.byteLength(body));
    res.end(res.req.method === 'HEAD' ? undefined : body);
  }

  return {
    start() {
      return new Promise<void>((resolve, reject) => {
        const onError = (error: NodeJS.ErrnoException) => {
          server.off('listening', onListening);
          const hint = error.code === 'EADDRINUSE' ? ' (another process uses it: set http.port, or http.enabled: false)' : '';
          reject(
            new SidekickError('HTTP_LISTEN', `cannot serve /metrics on ${params.host}:${params.port}: ${error.message}${hint}`, { cause: error }),
          );
        };
        const onListening = () => {
          server.off('error', onError);
          server.on('error', (error) => logger.error({ err: errorMessage(error) }, 'HTTP server error'));
          const a = server.address() as AddressInfo;
          logger.info({ host: a.address, port: a.port }, 'serving /metrics, /healthz, /readyz');
          resolve();
        };
        server.once('error', onError);
        server.once('listening', onListening);
        server.listen(params.port, params.host);
      });
    },
    stop() {
      stopped ??= new Promise<void>((resolve) => {
        if (!server.listening) return resolve();
        server.close(() => resolve());
        // Keep-alive connections would hold close() open until they time out.
        server.closeAllConnections();
      });
      return stopped;
    },
    address() {
      const a = server.address();
      if (a === null || typeof a === 'string') return undefined;
      return { host: a.address, port: a.port };
    },
  };
}
