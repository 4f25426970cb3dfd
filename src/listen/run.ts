import type { CommandIO } from '../commands/io.js';
import { errorMessage } from '../errors.js';
import { connectFailureMessage, resolveConnection, type ResolvedConnection } from '../pg/connection.js';
import { createListener, type ListenerEvent } from '../pg/listener.js';
import { PROGRAM, type ListenOptions } from './args.js';
import { createOutput } from './output.js';
import { tapNotifications } from './tap.js';

/** pglisten's exit codes, kept so that scripts keep working. */
export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_BADCONN = 2;

/**
 * Connects, LISTENs and copies notifications to stdout until a signal arrives or stdout is closed.
 * Exit code: 0 on a signal or a closed stdout, 2 when the first connection fails, 1 when LISTEN fails.
 */
export async function runListen(options: ListenOptions, io: CommandIO): Promise<number> {
  const say = (line: string) => {
    io.stderr.write(`${PROGRAM}: ${line}\n`);
  };
  const note = (line: string) => {
    if (!options.quiet) say(line);
  };

  let resolved: ResolvedConnection;
  try {
    resolved = resolveConnection({
      explicit: {
        ...(options.host !== undefined && { host: options.host }),
        ...(options.port !== undefined && { port: options.port }),
        ...(options.username !== undefined && { user: options.username }),
      },
      ...(options.dbname !== undefined && { dbname: options.dbname }),
      env: io.env,
      fallbackApplicationName: PROGRAM,
    });
  } catch (error) {
    // libpq reports a bad connection string as a failed connection, and so does pglisten (exit 2).
    say(errorMessage(error));
    return EXIT_BADCONN;
  }
  for (const warning of resolved.warnings) say(`warning: ${warning}`);
  if (options.channels.length === 0) note('no --listen=CHANNEL given: nothing will be printed');

  // Ends the run: the first reason wins.
  let finish!: (code: number) => void;
  const finished = new Promise<number>((resolve) => {
    finish = resolve;
  });
  let stdoutGone = false;

  const stdout = io.stdout as NodeJS.WritableStream & { write(chunk: Buffer, cb?: (e?: Error | null) => void): boolean };
  const output = createOutput(stdout, {
    print0: options.print0,
    context: options.context,
    onBlocked: () => listener.pause(),
    onUnblocked: () => listener.resume(),
  });
  // Stays attached until the process exits: a late EPIPE must not become an uncaught 'error'.
  io.stdout.on('error', (error: NodeJS.ErrnoException) => {
    stdoutGone = true;
    output.close();
    // The reader went away (`pglisten … | head`): that is how such pipelines end, not an error.
    if (error.code === 'EPIPE' || error.code === 'ERR_STREAM_DESTROYED') finish(EXIT_OK);
    else {
      say(`cannot write to stdout: ${errorMessage(error)}`);
      finish(EXIT_FAILURE);
    }
  });

  let authenticated = false;
  let wasConnected = false;
  const channelList = options.channels.map((c) => JSON.stringify(c)).join(', ');
  const onEvent = (event: ListenerEvent) => {
    if (event.type === 'connected') {
      if (event.reconnect) note(`reconnected; listening again on ${channelList || 'no channel'} (notifications sent meanwhile were missed)`);
      wasConnected = true;
      return;
    }
    const reason = connectFailureMessage(event.error, resolved).replace(/^connection to .*? failed: /, '');
    const wait = `${(event.retryInMs / 1000).toFixed(1)} s`;
    if (wasConnected) note(`connection lost (${reason}); reconnecting in ${wait}`);
    else note(`reconnect failed (${reason}); retrying in ${wait}`);
    wasConnected = false;
  };

  const listener = createListener({
    connection: resolved.config,
    channels: options.channels,
    applicationName: PROGRAM,
    onClient(client) {
      authenticated = true;
      // Without the tap (an unexpected node-postgres), onNotification below does the same, slower.
      tapNotifications(client, output.frame);
    },
    onNotification(n) {
      output.notification(n.channel, n.processId, n.payload);
    },
    onEvent,
  });

  const onAbort = () => finish(EXIT_OK);
  if (io.signal.aborted) return EXIT_OK;
  io.signal.addEventListener('abort', onAbort, { once: true });

  // A signal may come while the first connection is still being made: whichever comes first.
  const started = listener.start().then(
    () => undefined,
    (error: unknown) => ({ error }),
  );
  const first = await Promise.race([started, finished.then(() => undefined)]);
  if (first) {
    await listener.stop();
    io.signal.removeEventListener('abort', onAbort);
    if (io.signal.aborted) return EXIT_OK;
    if (authenticated) {
      say(`LISTEN failed: ${errorMessage(first.error)}`);
      return EXIT_FAILURE;
    }
    say(connectFailureMessage(first.error, resolved));
    return EXIT_BADCONN;
  }

  const code = await finished;
  io.signal.removeEventListener('abort', onAbort);
  await listener.stop();
  if (!stdoutGone) await output.drained();
  return code;
}
