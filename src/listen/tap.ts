import type pg from 'pg';
import { clientSocket } from '../pg/listener.js';

/**
 * Receives one NotificationResponse: `buf[start, end)` is the message body as the server sent it —
 * int32 sender pid, channel name, NUL, payload, NUL. Valid only during the call.
 */
export type FrameHandler = (buf: Buffer, start: number, end: number) => void;

const HEADER = 5; // type byte + int32 length (which counts itself but not the type byte)
const NOTIFICATION = 0x41; // 'A'

/**
 * Splits the server's byte stream into protocol messages and hands every NotificationResponse
 * straight to `onFrame`, bytes untouched; all other messages go on to node-postgres unchanged and in
 * order, so queries (the heartbeat) keep working. This skips node-postgres' per-notification message
 * object and two string decodes, which are most of the cost at a million notifications a second,
 * and it writes exactly the bytes the server sent (as libpq-based pglisten does), whatever the encoding.
 *
 * Install it right after the connection is authenticated and before any query (the connection is
 * then idle, so node-postgres holds no half-read message). Returns false, changing nothing, when the
 * connection does not look as expected (another node-postgres version); node-postgres then keeps
 * parsing and emitting 'notification' events as usual.
 */
export function tapNotifications(client: pg.Client, onFrame: FrameHandler): boolean {
  const socket = clientSocket(client) as (NodeJS.ReadableStream & { listeners(e: 'data'): ((...args: unknown[]) => unknown)[] }) | undefined;
  if (!socket || typeof socket.listeners !== 'function') return false;
  const downstream = socket.listeners('data');
  if (downstream.length !== 1) return false;
  const forward = downstream[0] as (chunk: Buffer) => void;
  const splitter = createSplitter(onFrame, forward);
  socket.removeListener('data', forward as (chunk: Buffer) => void);
  socket.on('data', splitter);
  return true;
}

/** The stream splitter on its own (exported for tests): feed it chunks cut anywhere. */
export function createSplitter(onFrame: FrameHandler, forward: (messages: Buffer) => void): (chunk: Buffer) => void {
  // A message cut by a chunk boundary, collected until complete.
  let partial: Buffer | undefined;
  let partialLength = 0;

  function takePartial(chunk: Buffer): number {
    let used = 0;
    let p = partial as Buffer;
    if (partialLength < HEADER) {
      used = Math.min(HEADER - partialLength, chunk.length);
      chunk.copy(p, partialLength, 0, used);
      partialLength += used;
      if (partialLength < HEADER) return used;
    }
    const total = 1 + p.readUInt32BE(1);
    if (p.length < total) {
      const grown = Buffer.allocUnsafe(total);
      p.copy(grown, 0, 0, partialLength);
      partial = p = grown;
    }
    const take = Math.min(total - partialLength, chunk.length - used);
    chunk.copy(p, partialLength, used, used + take);
    partialLength += take;
    used += take;
    if (partialLength < total) return used;
    partial = undefined;
    partialLength = 0;
    if (p[0] === NOTIFICATION) onFrame(p, HEADER, total);
    else forward(p.subarray(0, total));
    return used;
  }

  return (chunk: Buffer) => {
    let offset = partial ? takePartial(chunk) : 0;
    const length = chunk.length;
    let othersFrom = -1; // start of a run of non-notification messages, forwarded as one buffer
    while (offset + HEADER <= length) {
      const end = offset + 1 + chunk.readUInt32BE(offset + 1);
      if (end > length) break;
      if (chunk[offset] === NOTIFICATION) {
        if (othersFrom !== -1) {
          forward(chunk.subarray(othersFrom, offset));
          othersFrom = -1;
        }
        onFrame(chunk, offset + HEADER, end);
      } else if (othersFrom === -1) {
        othersFrom = offset;
      }
      offset = end;
    }
    if (othersFrom !== -1) forward(chunk.subarray(othersFrom, offset));
    if (offset < length) {
      // Fresh memory: the chunk belongs to the socket, and node-postgres may keep what it was given.
      const rest = length - offset;
      partial = Buffer.allocUnsafe(rest >= HEADER ? 1 + chunk.readUInt32BE(offset + 1) : HEADER);
      chunk.copy(partial, 0, offset, length);
      partialLength = rest;
    }
  };
}
