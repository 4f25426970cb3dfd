import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

// The README's first command. Runs the built CLI (npm test builds first) with its embedded PostgreSQL.
const CLI = join(import.meta.dirname, '../../dist/src/cli.js');

function run(args: string[], onStdout?: (text: string, child: ReturnType<typeof spawn>) => void) {
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => {
      stdout += c.toString();
      onStdout?.(stdout, child);
    });
    child.stderr.on('data', (c: Buffer) => {
      stderr += c.toString();
    });
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** A fresh data dir the embedded server's own user can reach (mkdtemp makes 0700 dirs). */
function dataDir(): string {
  const parent = mkdtempSync(join(tmpdir(), 'demo-'));
  chmodSync(parent, 0o755);
  return join(parent, 'pg');
}

describe('sidekick demo (embedded PostgreSQL)', () => {
  it('--once: shows envelopes flowing and exits 0', async () => {
    const dir = dataDir();
    const { code, stdout, stderr } = await run(['demo', '--once', '--dir', dir]);
    expect(code, stderr).toBe(0);
    const envelopes = stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { channel: string; source: string });
    expect(envelopes.length).toBeGreaterThanOrEqual(3);
    expect(envelopes.every((e) => e.channel === 'demo' || e.source === 'table')).toBe(true);
    expect(stderr).toContain('psql');
    // The local webhook receiver the demo starts got the four row changes (and nothing else).
    const received = stderr.split('\n').filter((l) => l.startsWith('webhook receiver ← '));
    expect(received, stderr).toHaveLength(4);
    const requests = received.map((l) => {
      const m = /^webhook receiver ← (\S+) (\S+) webhook-id=(\S+) (.*)$/.exec(l);
      expect(m, l).not.toBeNull();
      return { method: m![1], path: m![2], id: m![3], body: JSON.parse(m![4]!) as { id: string; op: string; table: string } };
    });
    expect(requests.every((r) => r.method === 'POST' && r.path === '/hooks/public/demo_orders')).toBe(true);
    expect(requests.every((r) => r.id === r.body.id && r.body.table === 'demo_orders')).toBe(true);
    expect(requests.map((r) => r.body.op).sort()).toEqual(['DELETE', 'INSERT', 'INSERT', 'UPDATE']);

    // The row written after the bridge stopped waits in the outbox; the next run posts it first.
    const again = await run(['demo', '--once', '--dir', dir]);
    expect(again.code, again.stderr).toBe(0);
    const first = again.stderr.split('\n').find((l) => l.startsWith('webhook receiver ← '));
    expect(first, again.stderr).toContain('written while the bridge was stopped');
  });

  it('stops cleanly on SIGINT', async () => {
    const dir = dataDir();
    let sent = false;
    const { code, stderr } = await run(['demo', '--dir', dir], (text, child) => {
      if (!sent && text.split('\n').length > 3) {
        sent = true;
        child.kill('SIGINT');
      }
    });
    expect(sent).toBe(true);
    expect(code, stderr).toBe(0);
  });
});
