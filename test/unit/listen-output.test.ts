import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { createOutput, type OutputStream } from '../../src/listen/output.js';
import { createSplitter, tapNotifications } from '../../src/listen/tap.js';
import type pg from 'pg';

/** A NotificationResponse message as the server sends it. */
function notificationMessage(pid: number, channel: string, payload: string): Buffer {
  const body = Buffer.concat([Buffer.alloc(4), Buffer.from(channel), Buffer.from([0]), Buffer.from(payload), Buffer.from([0])]);
  body.writeInt32BE(pid, 0);
  const head = Buffer.alloc(5);
  head[0] = 0x41;
  head.writeUInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
}

function otherMessage(type: string, body: string): Buffer {
  const head = Buffer.alloc(5);
  head[0] = type.charCodeAt(0);
  head.writeUInt32BE(Buffer.byteLength(body) + 4, 1);
  return Buffer.concat([head, Buffer.from(body)]);
}

/** A stdout stand-in that records writes and can pretend to be full. */
function fakeStream(options: { full?: boolean } = {}) {
  const emitter = new EventEmitter();
  const writes: Buffer[] = [];
  const stream: OutputStream & { writes: Buffer[]; text(): string; drain(): void } = {
    writes,
    write(chunk: Buffer, callback?: (e?: Error | null) => void) {
      writes.push(Buffer.from(chunk)); // a copy: proves the output never rewrites what it handed over
      if (callback) queueMicrotask(() => callback());
      return !options.full;
    },
    once(event: 'drain', listener: () => void) {
      emitter.once(event, listener);
      return stream;
    },
    text: () => Buffer.concat(writes).toString('utf8'),
    drain() {
      options.full = false;
      emitter.emit('drain');
    },
  };
  return stream;
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

describe('notification splitter', () => {
  const messages = [
    notificationMessage(101, 'a', 'one'),
    otherMessage('C', 'SELECT 1\0'),
    notificationMessage(102, 'Other', 'multi\nline ✓'),
    notificationMessage(103, 'a', ''),
    otherMessage('Z', 'I'),
    otherMessage('T', 'x'.repeat(300)),
    notificationMessage(104, 'a', 'y'.repeat(9000)),
  ];
  const stream = Buffer.concat(messages);

  function run(chunks: Buffer[]) {
    const frames: string[] = [];
    const forwarded: Buffer[] = [];
    const split = createSplitter(
      (buf, start, end) => {
        const body = buf.subarray(start, end);
        const zero = body.indexOf(0, 4);
        frames.push(`${body.readInt32BE(0)}|${body.subarray(4, zero).toString()}|${body.subarray(zero + 1, body.length - 1).toString()}`);
      },
      (b) => forwarded.push(Buffer.from(b)),
    );
    for (const c of chunks) split(c);
    return { frames, forwarded: Buffer.concat(forwarded) };
  }

  const expectedFrames = ['101|a|one', '102|Other|multi\nline ✓', '103|a|', `104|a|${'y'.repeat(9000)}`];
  const expectedOthers = Buffer.concat([messages[1], messages[4], messages[5]] as Buffer[]);

  it('takes notifications out and forwards everything else intact, in order', () => {
    const { frames, forwarded } = run([stream]);
    expect(frames).toEqual(expectedFrames);
    expect(forwarded.equals(expectedOthers)).toBe(true);
  });

  it('gives the same result wherever the chunks are cut', () => {
    for (let cut = 1; cut < stream.length; cut += 7) {
      const r = run([stream.subarray(0, cut), stream.subarray(cut)]);
      expect(r.frames, `cut at ${cut}`).toEqual(expectedFrames);
      expect(r.forwarded.equals(expectedOthers), `cut at ${cut}`).toBe(true);
    }
    const bytes = [...stream].map((b) => Buffer.from([b])); // one byte at a time
    const r = run(bytes);
    expect(r.frames).toEqual(expectedFrames);
    expect(r.forwarded.equals(expectedOthers)).toBe(true);
  });
});

describe('tapNotifications (a stand-in for a node-postgres client, no I/O)', () => {
  it("takes over the socket's single data listener and passes other messages on to it", () => {
    const socket = new EventEmitter();
    const seen: Buffer[] = [];
    socket.on('data', (b: Buffer) => seen.push(b));
    const client = { connection: { stream: socket } } as unknown as pg.Client;
    const frames: number[] = [];
    expect(tapNotifications(client, (buf, start) => frames.push(buf.readInt32BE(start)))).toBe(true);
    socket.emit('data', Buffer.concat([notificationMessage(42, 'a', 'x'), otherMessage('Z', 'I')]));
    expect(frames).toEqual([42]);
    expect(Buffer.concat(seen).equals(otherMessage('Z', 'I'))).toBe(true);
  });

  it('changes nothing when the client does not look as expected (node-postgres then parses as usual)', () => {
    expect(tapNotifications({} as pg.Client, () => {})).toBe(false);
    const socket = new EventEmitter();
    socket.on('data', () => {});
    socket.on('data', () => {});
    expect(tapNotifications({ connection: { stream: socket } } as unknown as pg.Client, () => {})).toBe(false);
    expect(socket.listenerCount('data')).toBe(2);
  });
});

describe('pglisten output', () => {
  const frameOf = (pid: number, channel: string, payload: string) => {
    const m = notificationMessage(pid, channel, payload);
    return [m, 5, m.length] as const;
  };

  it('writes payload + newline, or + NUL with -0, and the -H prefix "CHANNEL: (PID) "', async () => {
    for (const [flags, expected] of [
      [{ print0: false, context: false }, 'one\n\nmulti\nline\n'],
      [{ print0: true, context: false }, 'one\0\0multi\nline\0'],
      [{ print0: false, context: true }, 'a: (7) one\nMixed: (1234567) \nMixed: (2147483647) multi\nline\n'],
    ] as const) {
      const s = fakeStream();
      const out = createOutput(s, flags);
      out.frame(...frameOf(7, 'a', 'one'));
      out.frame(...frameOf(1234567, 'Mixed', ''));
      out.notification('Mixed', 2147483647, 'multi\nline'); // the node-postgres path formats the same
      await tick();
      expect(s.text()).toBe(expected);
    }
  });

  it('-H: a new sender or channel gets its own prefix', async () => {
    const s = fakeStream();
    const out = createOutput(s, { print0: false, context: true });
    for (const [pid, channel] of [
      [7, 'a'],
      [7, 'b'],
      [8, 'b'],
      [8, 'b'],
      [8, 'bb'],
      [-5, 'a'],
    ] as const)
      out.frame(...frameOf(pid, channel, 'x'));
    await tick();
    expect(s.text()).toBe('a: (7) x\nb: (7) x\nb: (8) x\nb: (8) x\nbb: (8) x\na: (-5) x\n');
  });

  it('gathers a burst into few large writes and flushes a lone notification at once', async () => {
    const s = fakeStream();
    const out = createOutput(s, { print0: false, context: false, chunkSize: 64 * 1024 });
    for (let i = 0; i < 20_000; i++) out.frame(...frameOf(1, 'b', String(i)));
    await tick();
    const expected = Array.from({ length: 20_000 }, (_, i) => `${i}\n`).join('');
    expect(s.text()).toBe(expected);
    expect(s.writes.length).toBeLessThan(5); // ~109 kB in 64 kB buffers
    out.frame(...frameOf(1, 'b', 'late'));
    await tick();
    expect(s.text().endsWith('late\n')).toBe(true);
  });

  it('asks the caller to stop reading while stdout is full, and loses nothing', async () => {
    const s = fakeStream({ full: true });
    let blocked = 0;
    let unblocked = 0;
    const out = createOutput(s, { print0: false, context: false, onBlocked: () => blocked++, onUnblocked: () => unblocked++ });
    out.frame(...frameOf(1, 'b', 'first'));
    await tick();
    expect(blocked).toBe(1);
    out.frame(...frameOf(1, 'b', 'second')); // already read from the socket: still written
    await tick();
    expect(blocked).toBe(1);
    s.drain();
    expect(unblocked).toBe(1);
    await out.drained();
    expect(s.text()).toBe('first\nsecond\n');
  });

  it('handles payloads larger than its buffer', async () => {
    const s = fakeStream();
    const out = createOutput(s, { print0: false, context: true, chunkSize: 1024 });
    out.frame(...frameOf(5, 'c', 'z'.repeat(8000)));
    out.notification('c', 5, 'é'.repeat(3000));
    await tick();
    expect(s.text()).toBe(`c: (5) ${'z'.repeat(8000)}\nc: (5) ${'é'.repeat(3000)}\n`);
  });
});
