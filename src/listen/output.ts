/**
 * pglisten's output: for each notification, with -H the prefix `CHANNEL: (SENDER_PID) `, then the
 * payload, then "\n" (or NUL with -0). pglisten writes and flushes every notification on its own;
 * here they are gathered in one buffer and handed to stdout once per event-loop turn (or whenever
 * the buffer fills), so a burst goes out in large writes while a lone notification still leaves at
 * once. Nothing is ever dropped: when stdout does not keep up, `onBlocked` asks the caller to stop
 * reading from the server until stdout drains.
 */

export interface OutputStream {
  write(chunk: Buffer, callback?: (error?: Error | null) => void): boolean;
  once(event: 'drain', listener: () => void): unknown;
}

export interface OutputOptions {
  readonly print0: boolean;
  readonly context: boolean;
  /** stdout's buffer is full: stop reading notifications. */
  readonly onBlocked?: () => void;
  /** stdout drained: read again. */
  readonly onUnblocked?: () => void;
  /** Size of the buffers notifications are gathered in. Default 256 KiB. */
  readonly chunkSize?: number;
}

export interface NotificationOutput {
  /** A NotificationResponse body as the server sent it (see tap.ts). */
  frame(buf: Buffer, start: number, end: number): void;
  /** A notification node-postgres already parsed (before the tap was in place, or without it). */
  notification(channel: string, processId: number, payload: string): void;
  /** Hands whatever is gathered to stdout now. */
  flush(): void;
  /** Stops writing for good (stdout is gone); later notifications are discarded. */
  close(): void;
  /** Resolves once stdout has taken everything written so far (flushes first). */
  drained(): Promise<void>;
}

const COLON_SPACE_PAREN = Buffer.from(': (');
const PAREN_SPACE = Buffer.from(') ');

function sameBytes(buf: Buffer, start: number, end: number, other: Buffer): boolean {
  if (end - start !== other.length) return false;
  for (let i = 0; i < other.length; i++) if (buf[start + i] !== other[i]) return false;
  return true;
}

export function createOutput(stream: OutputStream, options: OutputOptions): NotificationOutput {
  const chunkSize = options.chunkSize ?? 256 * 1024;
  const terminator = options.print0 ? 0 : 10;
  const context = options.context;
  let out = Buffer.allocUnsafe(chunkSize);
  let from = 0; // bytes before this were already handed to stdout
  let pos = 0;
  let scheduled = false;
  let blocked = false;
  let closed = false;
  // The -H prefix of the last notification, and what it was made from.
  let prefixPid = NaN;
  let prefixChannel = Buffer.alloc(0);
  let prefix = Buffer.alloc(0);

  const onDrain = () => {
    blocked = false;
    options.onUnblocked?.();
  };

  /** Hands the gathered bytes to stdout. */
  function flush(): void {
    if (closed || pos === from) return;
    const ok = stream.write(out.subarray(from, pos));
    // The written part is never touched again; later notifications go after it, or in a new buffer.
    from = pos;
    if (out.length - pos < 4096) {
      out = Buffer.allocUnsafe(chunkSize);
      from = pos = 0;
    }
    if (!ok && !blocked) {
      blocked = true;
      options.onBlocked?.();
      stream.once('drain', onDrain);
    }
  }

  const flushScheduled = () => {
    scheduled = false;
    flush();
  };

  function schedule(): void {
    if (!scheduled) {
      scheduled = true;
      setImmediate(flushScheduled);
    }
  }

  /** Makes room for `n` more bytes. */
  function reserve(n: number): void {
    if (pos + n <= out.length) return;
    flush();
    if (pos + n > out.length) {
      if (pos > from) throw new Error('output buffer still holds unwritten bytes'); // cannot happen: flush() wrote them
      out = Buffer.allocUnsafe(Math.max(chunkSize, n));
      from = pos = 0;
    }
  }

  return {
    frame(buf, start, end) {
      if (closed) return;
      // The body: int32 pid, channel NUL, payload NUL (the payload ends one byte before `end`).
      let channelEnd = start + 4;
      while (buf[channelEnd] !== 0) channelEnd++;
      const payloadStart = channelEnd + 1;
      const payloadEnd = end - 1;
      if (context) {
        reserve(channelEnd - start + payloadEnd - payloadStart + 20);
        const pid = buf.readInt32BE(start);
        // A burst comes from one sender on one channel: reuse the prefix made for the previous one.
        if (pid !== prefixPid || !sameBytes(buf, start + 4, channelEnd, prefixChannel)) {
          prefixPid = pid;
          prefixChannel = Buffer.from(buf.subarray(start + 4, channelEnd));
          prefix = Buffer.concat([prefixChannel, COLON_SPACE_PAREN, Buffer.from(String(pid)), PAREN_SPACE]);
        }
        pos += prefix.copy(out, pos);
      } else {
        reserve(payloadEnd - payloadStart + 1);
      }
      // Short payloads (ids, paths) are copied faster byte by byte than through a native call.
      if (payloadEnd - payloadStart <= 32) {
        for (let i = payloadStart; i < payloadEnd; i++) out[pos++] = buf[i] as number;
      } else {
        pos += buf.copy(out, pos, payloadStart, payloadEnd);
      }
      out[pos++] = terminator;
      schedule();
    },
    notification(channel, processId, payload) {
      if (closed) return;
      const prefix = context ? `${channel}: (${processId}) ` : '';
      reserve(Buffer.byteLength(prefix) + Buffer.byteLength(payload) + 1);
      if (prefix) pos += out.write(prefix, pos, 'utf8');
      pos += out.write(payload, pos, 'utf8');
      out[pos++] = terminator;
      schedule();
    },
    flush,
    close() {
      closed = true;
    },
    async drained() {
      flush();
      if (closed) return;
      // An empty write completes after every write before it.
      await new Promise<void>((resolve) => stream.write(Buffer.alloc(0), () => resolve()));
    },
  };
}
