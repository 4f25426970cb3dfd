import { readFileSync } from 'node:fs';
import amqp, { type ChannelModel, type ConfirmChannel, type SocketOptions } from 'amqplib';
import {
  bounded as boundedBy,
  ConfigError,
  createLink,
  errorMessage,
  FatalError,
  OK,
  redactUrl,
  RetriableError,
  SidekickError,
  type Envelope,
  type ItemOutcome,
  type SendResult,
  type Sink,
  type SinkContext,
} from '../../src/sink-kit.js';
import { createMessageBuilder } from './message.js';
import type { AmqpOptions } from './options.js';

/** What one publish came back with, by messageId: basic.return arrives before the basic.ack. */
interface Returned {
  readonly replyCode: number;
  readonly replyText: string;
  readonly routingKey: string;
}

/** One connection and its confirm channel (the sink's createLink link). A lost link is never reused: the next send opens a new one. */
interface Link {
  readonly connection: ChannelModel;
  readonly channel: ConfirmChannel;
  /** Set once the link is unusable; in-flight and later publishes on it fail with this. */
  lost: SidekickError | undefined;
  /** A channel-level error from the broker (404 exchange gone, 406 …), which closed the channel. */
  channelError: Error | undefined;
  readonly returned: Map<string, Returned[]>;
}

const CONNECT_CODES: Record<number, string> = {
  403: 'AMQP_ACCESS_REFUSED',
  404: 'AMQP_NOT_FOUND',
  406: 'AMQP_PRECONDITION_FAILED',
  530: 'AMQP_NOT_ALLOWED',
};

function readPem(value: string | undefined, file: string | undefined, what: string): string | undefined {
  if (file === undefined) return value;
  try {
    return readFileSync(file, 'utf8');
  } catch (error) {
    throw new ConfigError(`amqp tls.${what}File: cannot read ${file}: ${errorMessage(error)}`, { cause: error });
  }
}

function socketOptions(options: AmqpOptions, name: string): SocketOptions {
  const { caFile, certFile, keyFile, ca, cert, key, ...tls } = options.tls ?? {};
  const out: SocketOptions = {
    ...(tls as SocketOptions),
    timeout: options.connectTimeout,
    noDelay: true,
    clientProperties: { connection_name: `pg-sidekick ${name}` },
  };
  const pem = { ca: readPem(ca, caFile, 'ca'), cert: readPem(cert, certFile, 'cert'), key: readPem(key, keyFile, 'key') };
  for (const [k, v] of Object.entries(pem)) if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  return out;
}

/** The URL with our heartbeat unless the URL sets its own (seconds, as AMQP wants them). */
function connectUrl(options: AmqpOptions): string {
  const url = new URL(options.url);
  if (!url.searchParams.has('heartbeat')) url.searchParams.set('heartbeat', String(Math.round(options.heartbeat / 1000)));
  return url.toString();
}

/** Rejects when `signal` aborts or `ms` pass, whichever first; otherwise settles like `promise`. */
function bounded<T>(promise: Promise<T>, signal: AbortSignal | undefined, ms: number, what: string): Promise<T> {
  return boundedBy(promise, {
    ms,
    signal,
    aborted: () => new RetriableError('ABORTED', `${what}: aborted`),
    timedOut: () => new RetriableError('AMQP_TIMEOUT', `${what}: no answer within ${ms} ms`, { unavailable: true }),
  });
}

/**
 * The AMQP sink. One connection with one confirm channel, opened lazily and replaced after any loss
 * (broker restart, network, channel error) by the kit's reconnect helper: in-flight publishes then
 * fail as retriable (`unavailable`), and the dispatcher's sink-wide backoff paces the reconnect
 * attempts — the next send opens a new link. amqplib's own 'error'/'close' events are always
 * handled, so a broker going away never crashes the process.
 */
export function createAmqpSink(options: AmqpOptions, context: SinkContext): Sink {
  const { logger } = context;
  const where = redactUrl(options.url);
  const url = connectUrl(options);
  const sockets = socketOptions(options, context.name);
  const build = createMessageBuilder(options);
  const exchange = options.exchange;
  let stopped: Promise<void> | undefined;

  /** Why a failed open happened, as the dispatcher should see it: the destination is not usable. */
  function openError(error: unknown): SidekickError {
    if (error instanceof SidekickError) return error;
    const code = (error as { code?: unknown }).code;
    const name = typeof code === 'number' ? (CONNECT_CODES[code] ?? `AMQP_${code}`) : typeof code === 'string' ? code : 'AMQP_CONNECT';
    return new RetriableError(name, `amqp ${where}: ${errorMessage(error)}`, { cause: error, unavailable: true });
  }

  /** The link's publishes fail with `error` from now on; the next send opens a new link. */
  function markLost(l: Link, error: SidekickError): void {
    if (l.lost) return;
    l.lost = error;
    // A link that failed while opening was never handed out: retire() ignores it, connect reports it.
    links.retire(l, error);
  }

  async function open(): Promise<Link> {
    const connection = await amqp.connect(url, sockets);
    // Listeners first: an 'error' without one would crash the process (an EventEmitter rule).
    let l: Link | undefined;
    connection.on('error', (error: Error) => {
      if (l) markLost(l, new RetriableError('AMQP_CONNECTION_ERROR', `amqp ${where}: ${errorMessage(error)}`, { cause: error, unavailable: true }));
    });
    connection.on('close', (error?: Error) => {
      if (l)
        markLost(
          l,
          new RetriableError('AMQP_CONNECTION_LOST', `amqp ${where}: connection closed${error ? `: ${errorMessage(error)}` : ''}`, {
            cause: error,
            unavailable: true,
          }),
        );
    });
    let channel: ConfirmChannel;
    try {
      channel = await connection.createConfirmChannel();
    } catch (error) {
      await closeConnection(connection);
      throw error;
    }
    const opened: Link = { connection, channel, lost: undefined, channelError: undefined, returned: new Map() };
    l = opened;
    // Every send waits on 'drain' with its own listener; there may be `concurrency` of them.
    channel.setMaxListeners(0);
    connection.on('blocked', (reason: string) =>
      logger.warn({ broker: where, reason }, 'amqp broker blocked publishing (resource alarm); confirms will wait'),
    );
    connection.on('unblocked', () => logger.info({ broker: where }, 'amqp broker unblocked publishing'));
    channel.on('error', (error: Error) => {
      // The broker closed the channel (e.g. 404: the exchange was deleted). 'close' follows.
      opened.channelError = error;
    });
    channel.on('close', () => {
      const error = opened.channelError;
      markLost(
        opened,
        error
          ? new RetriableError(channelCode(error), `amqp ${where}: ${errorMessage(error)}`, { cause: error })
          : new RetriableError('AMQP_CHANNEL_CLOSED', `amqp ${where}: channel closed`, { unavailable: true }),
      );
      // One channel per connection: without it the connection is of no use.
      void closeConnection(opened.connection);
    });
    channel.on('return', (message: amqp.Message) => {
      const id = message.properties.messageId as string | undefined;
      if (id === undefined) return;
      // basic.return carries replyCode/replyText, which amqplib's MessageFields type leaves out.
      const fields = message.fields as amqp.MessageFields & { replyCode?: number; replyText?: string };
      const list = opened.returned.get(id) ?? [];
      list.push({ replyCode: fields.replyCode ?? 312, replyText: fields.replyText ?? 'NO_ROUTE', routingKey: fields.routingKey });
      opened.returned.set(id, list);
    });
    try {
      if (exchange !== '') {
        if (options.declare) {
          await channel.assertExchange(exchange, options.exchangeType, { durable: true });
        } else {
          await checkExchange(connection);
        }
      }
    } catch (error) {
      markLost(opened, openError(error));
      await closeConnection(connection);
      throw error;
    }
    return opened;
  }

  /** checkExchange on a throwaway channel: a failed check closes the channel it ran on. */
  async function checkExchange(connection: ChannelModel): Promise<boolean> {
    const probe = await connection.createChannel();
    probe.on('error', () => {});
    try {
      await probe.checkExchange(exchange);
      return true;
    } catch (error) {
      if ((error as { code?: unknown }).code === 404) {
        const missing = new RetriableError('AMQP_NOT_FOUND', `amqp ${where}: exchange "${exchange}" does not exist (declare: false)`, {
          cause: error,
          unavailable: true,
        });
        throw missing;
      }
      throw error;
    } finally {
      await bounded(probe.close(), undefined, 5_000, 'amqp probe close').catch(() => {});
    }
  }

  /** Opens a link, bounded: a handshake that answers after the timeout must not leave a connection behind. */
  async function connect(): Promise<Link> {
    const attempt = open();
    try {
      return await bounded(attempt, undefined, options.connectTimeout + 1_000, `amqp ${where}: connect`);
    } catch (error) {
      attempt
        .then(
          (late) => closeConnection(late.connection),
          () => {},
        )
        .catch(() => {});
      throw openError(error);
    }
  }

  /**
   * Closes a link. One still healthy is being stopped: let its outstanding confirms arrive first, so
   * nothing in flight is reported lost; a lost one is closed at once. The broker's CloseOk is not
   * waited for (closeConnection bounds it to 5 s and destroys the socket after that).
   */
  async function closeLink(l: Link): Promise<void> {
    if (!l.lost) {
      l.lost = new RetriableError('AMQP_STOPPED', `amqp sink ${context.name} is stopped`, { unavailable: true });
      await bounded(l.channel.waitForConfirms(), undefined, 5_000, 'amqp stop').catch(() => {});
    }
    void closeConnection(l.connection);
  }

  const links = createLink<Link>({
    connect,
    close: closeLink,
    isBroken: (l) => l.lost !== undefined,
    onRetire: (l) => {
      const e = lostError(l);
      if (!stopped) logger.warn({ broker: where, code: e.code, err: e.message }, 'amqp connection lost; will reconnect on the next send');
    },
    onConnected: (_l, failedBefore) => logger.info({ broker: where, exchange, reconnect: failedBefore > 0 || undefined }, 'amqp connected'),
    onConnectFailed: (error, failures) => {
      // The dispatcher logs the sink-wide backoff; here only the first failure of a series.
      const e = openError(error);
      if (failures === 1) logger.warn({ broker: where, code: e.code, err: e.message }, 'amqp connect failed');
    },
    closedError: () => new RetriableError('AMQP_STOPPED', `amqp sink ${context.name} is stopped`, { unavailable: true }),
    abortedError: () => new RetriableError('ABORTED', `amqp ${where}: connect: aborted`),
  });

  function lostError(l: Link): SidekickError {
    return l.lost ?? new RetriableError('AMQP_CHANNEL_CLOSED', `amqp ${where}: channel closed`, { unavailable: true });
  }

  function unroutable(_e: Envelope, r: Returned): SidekickError {
    const message =
      `amqp ${where}: message returned as unroutable by exchange "${exchange}" with routing key "${r.routingKey}" (${r.replyCode} ` +
      `${r.replyText}): no queue is bound for it`;
    return options.unroutable === 'fatal' ? new FatalError('AMQP_UNROUTABLE', message) : new RetriableError('AMQP_UNROUTABLE', message);
  }

  function waitDrain(l: Link, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        l.channel.off('drain', done);
        l.channel.off('close', done);
        signal.removeEventListener('abort', done);
        resolve();
      };
      l.channel.on('drain', done);
      l.channel.on('close', done);
      signal.addEventListener('abort', done, { once: true });
    });
  }

  async function publishBatch(l: Link, batch: readonly Envelope[], signal: AbortSignal): Promise<SendResult> {
    const outcomes = new Array<ItemOutcome | undefined>(batch.length);
    let unsettled = 0;
    let allSettled: () => void = () => {};
    const settledPromise = new Promise<void>((resolve) => {
      allSettled = resolve;
    });

    const settle = (i: number, e: Envelope, error: unknown) => {
      // The returned-message record must go whether or not this item already timed out.
      const returns = l.returned.get(e.id);
      const returned = error === null ? returns?.shift() : undefined;
      if (returns && returns.length === 0) l.returned.delete(e.id);
      if (outcomes[i] === undefined) {
        if (error === null) {
          outcomes[i] = returned ? { ok: false, error: unroutable(e, returned) } : OK;
        } else if (error instanceof Error && error.message === 'message nacked') {
          outcomes[i] = { ok: false, error: new RetriableError('AMQP_NACK', `amqp ${where}: the broker refused the message (basic.nack)`) };
        } else {
          outcomes[i] = { ok: false, error: lostError(l) };
        }
      }
      if (--unsettled === 0) allSettled();
    };

    for (let i = 0; i < batch.length; i++) {
      const e = batch[i] as Envelope;
      if (l.lost) {
        outcomes[i] = { ok: false, error: l.lost };
        continue;
      }
      if (signal.aborted) break;
      let message: ReturnType<typeof build>;
      try {
        message = build(e);
      } catch (error) {
        // A template field the event lacks keeps its own code (TEMPLATE_FIELD_MISSING).
        outcomes[i] = {
          ok: false,
          error:
            error instanceof SidekickError
              ? error
              : new FatalError('AMQP_MESSAGE', `amqp: cannot build the message for ${e.id}: ${errorMessage(error)}`, { cause: error }),
        };
        continue;
      }
      let flowing: boolean;
      unsettled++;
      try {
        flowing = l.channel.publish(exchange, message.routingKey, message.content, message.properties, (error: unknown) =>
          settle(i, e, error ?? null),
        );
      } catch (error) {
        // Thrown before the publish was written: the channel closed, or amqplib refused to encode it
        // (a header table over 64 KiB is a RangeError) — the latter will never work.
        unsettled--;
        outcomes[i] = {
          ok: false,
          error:
            l.lost ??
            (error instanceof RangeError || error instanceof TypeError
              ? new FatalError('AMQP_MESSAGE', `amqp: cannot encode the message for ${e.id}: ${errorMessage(error)}`, { cause: error })
              : lostError(l)),
        };
        continue;
      }
      // Flow control: the channel's write buffer is full; wait until the socket takes more.
      if (!flowing) await waitDrain(l, signal);
    }

    if (unsettled > 0) {
      let timer: NodeJS.Timeout | undefined;
      let onAbort: (() => void) | undefined;
      await Promise.race([
        settledPromise,
        new Promise<void>((resolve) => {
          timer = setTimeout(resolve, options.confirmTimeout);
          timer.unref();
        }),
        new Promise<void>((resolve) => {
          onAbort = resolve;
          signal.addEventListener('abort', onAbort, { once: true });
        }),
      ]);
      clearTimeout(timer);
      if (onAbort) signal.removeEventListener('abort', onAbort);
    }
    const pendingError = signal.aborted
      ? new RetriableError('ABORTED', `amqp ${where}: stopped before the broker confirmed`)
      : new RetriableError('AMQP_CONFIRM_TIMEOUT', `amqp ${where}: no confirm from the broker within ${options.confirmTimeout} ms`);
    // A confirm that never came means the broker may or may not have the message: retrying can
    // duplicate it (at-least-once), never lose it.
    return outcomes.map((o) => o ?? { ok: false, error: pendingError });
  }

  return {
    name: context.name,
    type: 'amqp',
    // One channel: the broker receives a batch in publish order, so a batch may carry a run of one key.
    ordered: true,
    async start(signal) {
      await links.get(signal);
    },
    async send(batch, signal) {
      if (signal.aborted) throw new RetriableError('ABORTED', `amqp ${where}: aborted`);
      const l = await links.get(signal);
      return links.use(l, () => publishBatch(l, batch, signal));
    },
    stop() {
      stopped ??= links.close();
      return stopped;
    },
    async check(signal) {
      const connecting = amqp.connect(url, sockets);
      let connection: ChannelModel;
      try {
        connection = await bounded(connecting, signal, options.connectTimeout + 1_000, `amqp ${where}: connect`);
      } catch (error) {
        connecting
          .then(
            (late) => closeConnection(late),
            () => {},
          )
          .catch(() => {});
        throw error;
      }
      connection.on('error', () => {});
      try {
        const server = connection.connection.serverProperties;
        const product = `${server.product ?? 'AMQP broker'} ${server.version ?? ''}`.trim();
        if (exchange === '') return `${where}, default exchange (${product})`;
        try {
          await checkExchange(connection);
          return `${where}, exchange "${exchange}" (${product})`;
        } catch (error) {
          if (options.declare && error instanceof SidekickError && error.code === 'AMQP_NOT_FOUND') {
            return `${where}, exchange "${exchange}" not there yet: declared (${options.exchangeType}, durable) on start (${product})`;
          }
          throw error;
        }
      } finally {
        await closeConnection(connection);
      }
    },
  };
}

/**
 * Closes a connection, bounded. amqplib's close() only settles on the broker's CloseOk, which never
 * comes when the socket dies meanwhile; the 'close' event does. After `ms`, the socket is destroyed.
 */
function closeConnection(connection: ChannelModel, ms = 5_000): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      (connection.connection as unknown as { stream?: { destroy(): void } }).stream?.destroy();
      done();
    }, ms);
    timer.unref();
    function done() {
      clearTimeout(timer);
      connection.off('close', done);
      resolve();
    }
    connection.on('error', () => {});
    connection.once('close', done);
    connection.close().then(done, done);
  });
}

function channelCode(error: Error): string {
  const code = (error as { code?: unknown }).code;
  return typeof code === 'number' ? (CONNECT_CODES[code] ?? `AMQP_${code}`) : 'AMQP_CHANNEL_ERROR';
}
