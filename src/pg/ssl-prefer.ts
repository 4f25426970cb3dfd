import { EventEmitter } from 'node:events';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';

/** SSLRequest: the length (8), then the code 80877103 (1234 << 16 | 5679). */
const SSL_REQUEST = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);
const YES = 0x53; // 'S'
const NO = 0x4e; // 'N'

/**
 * libpq's sslmode=prefer (its default) for node-postgres, which has no such mode: a `stream` factory
 * for a client config with `ssl: false`. Each connection asks the server for SSL first; if the server
 * says yes, the conversation goes on over TLS with `tlsOptions`; if it says no, it goes on in the
 * clear on the same socket, as libpq does. Being part of the config, it serves every client and pool
 * made from it alike — the bridge's drain, scheduler, listeners and stats, and every command.
 */
export function preferSsl(tlsOptions: tls.ConnectionOptions): () => Duplex {
  // node-postgres types its stream as a Duplex; it uses only the socket methods PreferSslSocket has.
  return () => new PreferSslSocket(tlsOptions) as unknown as Duplex;
}

/**
 * The socket node-postgres talks to: the TCP socket, or TLS over it once the server said yes. It
 * forwards events and calls to whichever carries the conversation — no stream in between, so
 * reading costs what it costs on a plain socket, and pause()/resume() hold the real one (a paused
 * LISTEN connection makes the server queue its notifications, as with a plain socket).
 */
class PreferSslSocket extends EventEmitter {
  private readonly raw = new net.Socket();
  /** Carries the conversation: `raw` until the server said yes, then the TLS socket over it. */
  private active: net.Socket;
  private connected = false;

  constructor(private readonly tlsOptions: tls.ConnectionOptions) {
    super();
    this.active = this.raw;
    this.follow(this.raw);
  }

  /** Forwards what node-postgres listens to from `socket`, while it is the active one. */
  private follow(socket: net.Socket): void {
    socket.on('data', (chunk: Buffer) => {
      if (this.connected && socket === this.active) this.emit('data', chunk);
    });
    socket.on('end', () => {
      if (socket === this.active) this.emit('end');
    });
    socket.on('error', (error) => {
      if (socket === this.active) this.emit('error', error);
    });
    socket.on('close', () => {
      if (socket === this.active) this.emit('close');
    });
  }

  connect(port: number, host: string): this {
    this.raw.once('connect', () => {
      this.raw.once('data', (answer: Buffer) => this.settle(answer, host));
      this.raw.write(SSL_REQUEST);
    });
    this.raw.connect(port, host);
    return this;
  }

  private settle(answer: Buffer, host: string): void {
    if (answer.length === 1 && answer[0] === YES) {
      const secure = tls.connect({
        ...this.tlsOptions,
        socket: this.raw,
        host,
        // SNI must not be an IP address (RFC 6066); node-postgres leaves it out the same way.
        ...(net.isIP(host) === 0 && { servername: host }),
      });
      // From here on the TLS socket speaks for the connection (the TCP socket's troubles reach it).
      this.active = secure;
      this.follow(secure);
      secure.once('secureConnect', () => this.ready());
    } else if (answer.length === 1 && answer[0] === NO) {
      this.ready();
    } else {
      // node-postgres's words for an answer that is neither (libpq: "received invalid response to SSL negotiation").
      this.destroy(new Error('There was an error establishing an SSL connection'));
    }
  }

  private ready(): void {
    this.connected = true;
    this.emit('connect');
  }

  get writable(): boolean {
    return this.active.writable;
  }

  write(chunk: Buffer | string, callback?: (error?: Error | null) => void): boolean {
    if (!this.connected) {
      callback?.(new Error('not connected'));
      return false;
    }
    return this.active.write(chunk, callback);
  }

  end(callback?: () => void): this {
    this.active.end(callback);
    return this;
  }

  destroy(error?: Error): this {
    this.active.destroy(error);
    if (this.active !== this.raw) this.raw.destroy();
    return this;
  }

  pause(): this {
    this.active.pause();
    return this;
  }

  resume(): this {
    this.active.resume();
    return this;
  }

  setNoDelay(noDelay?: boolean): this {
    this.raw.setNoDelay(noDelay);
    return this;
  }

  setKeepAlive(enable?: boolean, initialDelay?: number): this {
    this.raw.setKeepAlive(enable, initialDelay);
    return this;
  }

  ref(): this {
    this.raw.ref();
    return this;
  }

  unref(): this {
    this.raw.unref();
    return this;
  }
}
