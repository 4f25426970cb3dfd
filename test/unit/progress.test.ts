import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createProgress } from '../../src/commands/progress.js';

function stream(tty: boolean): PassThrough & { text: () => string } {
  const s = new PassThrough() as PassThrough & { isTTY?: boolean; text: () => string };
  let text = '';
  s.on('data', (d) => {
    text += String(d);
  });
  if (tty) s.isTTY = true;
  s.text = () => text;
  return s;
}

describe('progress output', () => {
  it('redraws one bar in place on a terminal', () => {
    const s = stream(true);
    const p = createProgress(s, 'backfill t', 200);
    p.update(50);
    p.finish(200);
    expect(s.text()).toMatch(/^\rbackfill t \[#{8}-{22}\] {2}25% {2}50\/200 rows .*\rbackfill t \[#{30}\] 100% {2}200\/200 rows .*\n$/s);
  });

  it('writes plain lines (no carriage returns) when stderr is not a terminal', () => {
    const s = stream(false);
    const p = createProgress(s, 'dlq retry', 30_000, 'dead letters');
    p.update(10_000);
    p.update(20_000); // within 2 s of the last line: skipped
    p.finish(30_000);
    expect(s.text().split('\n').filter(Boolean)).toEqual([
      expect.stringMatching(/^dlq retry: 10,000\/30,000 dead letters \(33%\), [\d,]+ dead letters\/s$/),
      expect.stringMatching(/^dlq retry: 30,000\/30,000 dead letters \(100%\)/),
    ]);
    expect(s.text()).not.toContain('\r');
  });
});
