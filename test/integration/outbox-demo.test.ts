import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

// `sidekick demo` (built CLI, embedded PostgreSQL): row changes flow, and survive a restart.
const CLI = join(import.meta.dirname, '../../dist/src/cli.js');

function demo(dir: string) {
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, [CLI, 'demo', '--once', '--dir', dir], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => {
      stdout += c.toString();
    });
    child.stderr.on('data', (c: Buffer) => {
      stderr += c.toString();
    });
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

interface Line {
  id: string;
  seq: string;
  source: string;
  op?: string;
  channel: string;
  new?: { item: string } | null;
}

describe('sidekick demo: the durable path (embedded PostgreSQL)', () => {
  it('shows captured row changes, and delivers a row written while it was stopped on the next run', async () => {
    const parent = mkdtempSync(join(tmpdir(), 'demo-outbox-'));
    chmodSync(parent, 0o755);
    const dir = join(parent, 'pg');
    const first = await demo(dir);
    expect(first.code, first.stderr).toBe(0);
    const events = first.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Line);
    // In order per row (key); rows of one statement may interleave: compare in id order.
    const rowChanges = events.filter((e) => e.source === 'table').sort((a, b) => Number(a.seq) - Number(b.seq));
    expect(rowChanges.map((e) => e.op)).toEqual(['INSERT', 'INSERT', 'UPDATE', 'DELETE']);
    expect(first.stderr).toContain('run the demo again');
    const second = await demo(dir);
    expect(second.code, second.stderr).toBe(0);
    const again = second.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Line);
    expect(again.filter((e) => e.source === 'table')[0]?.new?.item).toBe('written while the bridge was stopped');
    expect(second.stderr).toContain('waited in the outbox while the bridge was down');
  }, 120_000);
});
