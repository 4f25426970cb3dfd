/** How a step that was given until a deadline ended. */
export type Settled = { readonly state: 'done' } | { readonly state: 'failed'; readonly error: unknown } | { readonly state: 'late' };

/**
 * Waits for `work` until the wall clock reaches `deadline` (ms since the epoch), and no longer. The
 * work itself goes on (nothing here can cancel it); the caller decides what a late step means —
 * during a shutdown, that the process exits without it. Never rejects: a failure is returned, so a
 * shutdown that logs it can go on with its next step.
 */
export async function settleBy(work: Promise<unknown> | undefined, deadline: number, now: () => number = Date.now): Promise<Settled> {
  if (work === undefined) return { state: 'done' };
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<Settled>((resolve) => {
    // Not unref'd: while a shutdown waits, this timer may be the only thing keeping the process
    // alive until it can say how the shutdown ended. It is cleared as soon as the work settles.
    timer = setTimeout(() => resolve({ state: 'late' }), Math.max(0, deadline - now()));
  });
  try {
    return await Promise.race([
      work.then((): Settled => ({ state: 'done' }), (error: unknown): Settled => ({ state: 'failed', error })),
      late,
    ]);
  } finally {
    clearTimeout(timer);
  }
}
