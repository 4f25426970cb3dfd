/** Progress of long commands (backfill, dlq retry --all) on stderr: a bar redrawn in place on a terminal, plain lines (at most one per 2 s) otherwise. */
export function createProgress(stream: NodeJS.WritableStream, label: string, total: number, unit = 'rows') {
  const tty = (stream as { isTTY?: boolean }).isTTY === true;
  const started = Date.now();
  let last = 0;
  const n = (v: number) => v.toLocaleString('en-US');
  const render = (done: number) => {
    const pct = total > 0 ? Math.min(1, done / total) : 1;
    const rate = done / Math.max(0.001, (Date.now() - started) / 1000);
    if (!tty) return `${label}: ${n(done)}/${n(total)} ${unit} (${Math.round(pct * 100)}%), ${n(Math.round(rate))} ${unit}/s\n`;
    const width = 30;
    const fill = Math.round(pct * width);
    return (
      `\r${label} [${'#'.repeat(fill)}${'-'.repeat(width - fill)}] ${String(Math.round(pct * 100)).padStart(3)}%  ${n(done)}/${n(total)} ${unit} ` +
      ` ${n(Math.round(rate))} ${unit}/s`
    );
  };
  return {
    update(done: number): void {
      const now = Date.now();
      if (now - last < (tty ? 100 : 2_000)) return;
      last = now;
      stream.write(render(done));
    },
    finish(done: number): void {
      stream.write(render(done) + (tty ? '\n' : ''));
    },
  };
}
