import { createServer as createHttpServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type ServerOptions as HttpsOptions } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';

/** One request as the receiver saw it. */
export interface ReceivedRequest {
  readonly method: string;
  readonly path: string;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
  readonly at: number;
}

/** What the receiver answers: a response, or `hang` (never answer), or `destroy` (drop the connection). */
export type Reply = { status: number; headers?: Record<string, string>; body?: string } | 'hang' | 'destroy';

export interface Receiver {
  readonly url: string;
  readonly port: number;
  readonly requests: ReceivedRequest[];
  /** TCP connections accepted so far (keep-alive reuse shows as few connections for many requests). */
  readonly connections: number;
  /** Stops listening and drops every open connection. */
  close(): Promise<void>;
  /** Listens again on the same port (a receiver that was down and is back). */
  reopen(): Promise<void>;
}

/**
 * A real HTTP(S) server on 127.0.0.1 for the webhook tests: it records every request and answers
 * with `reply` (default 204). No HTTP mocking library is involved: the sink talks to it over TCP.
 */
export async function startReceiver(
  reply: (req: ReceivedRequest, index: number) => Reply | Promise<Reply> = () => ({ status: 204 }),
  options: { port?: number; tls?: HttpsOptions } = {},
): Promise<Receiver> {
  const requests: ReceivedRequest[] = [];
  const sockets = new Set<Socket>();
  let connections = 0;
  const handler = (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const received: ReceivedRequest = {
        method: req.method ?? '',
        path: req.url ?? '',
        headers: req.headers,
        body: Buffer.concat(chunks).toString('utf8'),
        at: Date.now(),
      };
      const index = requests.push(received) - 1;
      void Promise.resolve(reply(received, index)).then((r) => {
        if (r === 'hang') return;
        if (r === 'destroy') {
          req.socket.destroy();
          return;
        }
        res.writeHead(r.status, r.headers ?? {});
        res.end(r.body ?? '');
      });
    });
  };
  const make = (): Server => {
    const server = options.tls ? createHttpsServer(options.tls, handler) : createHttpServer(handler);
    server.keepAliveTimeout = 60_000;
    server.on(options.tls ? 'secureConnection' : 'connection', (socket: Socket) => {
      connections++;
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
    });
    return server;
  };
  const listen = (server: Server, port: number) =>
    new Promise<number>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => resolve((server.address() as AddressInfo).port));
    });
  let server = make();
  const port = await listen(server, options.port ?? 0);
  let open = true;
  return {
    url: `${options.tls ? 'https' : 'http'}://127.0.0.1:${port}`,
    port,
    requests,
    get connections() {
      return connections;
    },
    async close() {
      if (!open) return;
      open = false;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sockets) s.destroy();
      server.closeAllConnections?.();
      await closed;
    },
    async reopen() {
      if (open) return;
      server = make();
      await listen(server, port);
      open = true;
    },
  };
}
