import { describe, expect, it } from 'vitest';
import { RetriableError } from '../../src/errors.js';
import { createLink, type LinkOptions } from '../../src/sink-link.js';

// The reconnect helper on fakes: links are plain objects, connects are promises the test settles
// itself. No I/O, no timers.

interface FakeLink {
  readonly n: number;
  broken: boolean;
}

function deferred<T>() {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** A helper over fake links: `connects` pending attempts the test settles, `closed` what was closed. */
function fake(over: Partial<LinkOptions<FakeLink>> = {}) {
  const connects: ReturnType<typeof deferred<FakeLink>>[] = [];
  const closed: FakeLink[] = [];
  const events: string[] = [];
  let made = 0;
  const link = createLink<FakeLink>({
    connect: () => {
      const d = deferred<FakeLink>();
      connects.push(d);
      return d.promise;
    },
    close: async (l) => {
      closed.push(l);
    },
    isBroken: (l) => l.broken,
    onRetire: (l, reason) => events.push(`retire ${l.n} ${String(reason)}`),
    onConnected: (l, failedBefore) => events.push(`connected ${l.n} after ${failedBefore}`),
    onConnectFailed: (error, failures) => events.push(`failed ${failures}: ${(error as Error).message}`),
    ...over,
  });
  const next = (): FakeLink => ({ n: ++made, broken: false });
  /** Lets the helper's promise callbacks run. */
  const settle = () => new Promise<void>((r) => setImmediate(r));
  return { link, connects, closed, events, next, settle };
}

describe('createLink: lazy connect, one attempt in flight', () => {
  it('connects on the first get, not before, and hands the same link out until it is retired', async () => {
    const f = fake();
    await f.settle();
    expect(f.connects).toHaveLength(0);
    const first = f.link.get();
    await f.settle();
    expect(f.connects).toHaveLength(1);
    const l1 = f.next();
    f.connects[0]!.resolve(l1);
    expect(await first).toBe(l1);
    expect(await f.link.get()).toBe(l1);
    expect(f.link.current).toBe(l1);
    expect(f.connects).toHaveLength(1);
  });

  it('concurrent callers share one attempt', async () => {
    const f = fake();
    const gets = [f.link.get(), f.link.get(), f.link.get()];
    await f.settle();
    expect(f.connects).toHaveLength(1);
    const l1 = f.next();
    f.connects[0]!.resolve(l1);
    expect(await Promise.all(gets)).toEqual([l1, l1, l1]);
  });

  it('a failed attempt is forgotten: every waiting caller gets its error, the next get tries again', async () => {
    const f = fake();
    const refused = new RetriableError('ECONNREFUSED', 'refused', { unavailable: true });
    const gets = [f.link.get(), f.link.get()].map((p) => p.catch((e: unknown) => e));
    await f.settle();
    f.connects[0]!.reject(refused);
    expect(await Promise.all(gets)).toEqual([refused, refused]);
    expect(f.link.current).toBeUndefined();
    const again = f.link.get().catch((e: unknown) => e);
    await f.settle();
    expect(f.connects).toHaveLength(2);
    f.connects[1]!.reject(refused);
    expect(await again).toBe(refused);
    const third = f.link.get();
    await f.settle();
    const l1 = f.next();
    f.connects[2]!.resolve(l1);
    expect(await third).toBe(l1);
    expect(f.events).toEqual(['failed 1: refused', 'failed 2: refused', 'connected 1 after 2']);
  });

  it('a connect that throws synchronously is a failed attempt like any other', async () => {
    let calls = 0;
    const link = createLink<FakeLink>({
      connect: () => {
        calls++;
        if (calls === 1) throw new Error('bad url');
        return Promise.resolve({ n: calls, broken: false });
      },
      close: async () => {},
    });
    await expect(link.get()).rejects.toThrow('bad url');
    expect(await link.get()).toEqual({ n: 2, broken: false });
  });

  it('a caller whose signal aborts stops waiting; the attempt goes on and serves the next get', async () => {
    const f = fake();
    const controller = new AbortController();
    const waiting = f.link.get(controller.signal).catch((e: unknown) => e);
    await f.settle();
    controller.abort();
    const error = await waiting;
    expect(error).toBeInstanceOf(RetriableError);
    expect(error).toMatchObject({ code: 'ABORTED' });
    const l1 = f.next();
    f.connects[0]!.resolve(l1);
    expect(await f.link.get()).toBe(l1);
    expect(f.connects).toHaveLength(1);
  });

  it("an already aborted signal rejects at once with the sink's own error", async () => {
    const f = fake({ abortedError: (s) => new RetriableError('ABORTED', `mine: ${String(s.reason)}`) });
    const controller = new AbortController();
    controller.abort('stop');
    await expect(f.link.get(controller.signal)).rejects.toMatchObject({ message: 'mine: stop' });
  });
});

describe('createLink: retiring a link', () => {
  async function connected() {
    const f = fake();
    const got = f.link.get();
    await f.settle();
    const l1 = f.next();
    f.connects[0]!.resolve(l1);
    await got;
    return { ...f, l1 };
  }

  it('a retired link is closed and never handed out again: the next get connects a new one', async () => {
    const f = await connected();
    expect(f.link.retire(f.l1, 'connection reset')).toBe(true);
    expect(f.link.current).toBeUndefined();
    await f.settle();
    expect(f.closed).toEqual([f.l1]);
    const next = f.link.get();
    await f.settle();
    expect(f.connects).toHaveLength(2);
    const l2 = f.next();
    f.connects[1]!.resolve(l2);
    expect(await next).toBe(l2);
    expect(f.events).toEqual(['connected 1 after 0', 'retire 1 connection reset', 'connected 2 after 0']);
  });

  it('retiring twice, or a link it never handed out, does nothing', async () => {
    const f = await connected();
    expect(f.link.retire(f.l1)).toBe(true);
    expect(f.link.retire(f.l1)).toBe(false);
    expect(f.link.retire({ n: 99, broken: false })).toBe(false);
    await f.settle();
    expect(f.closed).toEqual([f.l1]);
    expect(f.events.filter((e) => e.startsWith('retire'))).toHaveLength(1);
  });

  it('a link retired while in use is closed after its last use, not under the requests on it', async () => {
    const f = await connected();
    const a = deferred<string>();
    const b = deferred<string>();
    const first = f.link.use(f.l1, () => a.promise);
    const second = f.link.use(f.l1, () => b.promise);
    f.link.retire(f.l1, 'producer is disconnected');
    await f.settle();
    expect(f.closed).toEqual([]);
    a.resolve('a');
    expect(await first).toBe('a');
    await f.settle();
    expect(f.closed).toEqual([]);
    b.reject(new Error('lost'));
    await expect(second).rejects.toThrow('lost');
    await f.settle();
    expect(f.closed).toEqual([f.l1]);
  });

  it('use() of a healthy link closes nothing', async () => {
    const f = await connected();
    expect(await f.link.use(f.l1, async () => 42)).toBe(42);
    await f.settle();
    expect(f.closed).toEqual([]);
    expect(f.link.current).toBe(f.l1);
  });

  it('a link the library reports broken (isBroken) is retired by the next get, which connects again', async () => {
    const f = await connected();
    f.l1.broken = true;
    const next = f.link.get();
    await f.settle();
    expect(f.events).toContain('retire 1 broken');
    expect(f.closed).toEqual([f.l1]);
    const l2 = f.next();
    f.connects[1]!.resolve(l2);
    expect(await next).toBe(l2);
  });
});

describe('createLink: close()', () => {
  it('closes the current link once, and get() rejects afterwards with the closed error', async () => {
    const f = fake({ closedError: () => new RetriableError('AMQP_STOPPED', 'stopped', { unavailable: true }) });
    const got = f.link.get();
    await f.settle();
    const l1 = f.next();
    f.connects[0]!.resolve(l1);
    await got;
    await Promise.all([f.link.close(), f.link.close()]);
    await f.link.close();
    expect(f.closed).toEqual([l1]);
    await expect(f.link.get()).rejects.toMatchObject({ code: 'AMQP_STOPPED', unavailable: true });
    expect(f.connects).toHaveLength(1);
  });

  it('waits for an attempt in flight, closes the link it brings, and fails its callers', async () => {
    const f = fake();
    const waiting = f.link.get().catch((e: unknown) => e);
    await f.settle();
    let done = false;
    const closing = f.link.close().then(() => {
      done = true;
    });
    await f.settle();
    expect(done).toBe(false);
    const late = f.next();
    f.connects[0]!.resolve(late);
    await closing;
    expect(f.closed).toEqual([late]);
    expect(await waiting).toMatchObject({ code: 'STOPPED', retriable: true, unavailable: true });
    expect(f.link.current).toBeUndefined();
  });

  it('close() without any connect closes nothing; a close callback that fails is ignored', async () => {
    const idle = fake();
    await idle.link.close();
    expect(idle.closed).toEqual([]);
    expect(idle.connects).toHaveLength(0);

    const failing = fake({ close: () => Promise.reject(new Error('already gone')) });
    const got = failing.link.get();
    await failing.settle();
    failing.connects[0]!.resolve(failing.next());
    await got;
    await expect(failing.link.close()).resolves.toBeUndefined();
  });
});
