import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createTestDatabase, waitFor, type TestDatabase } from '../support/db.js';
import { REPO_ROOT } from '../support/services.js';

// examples/delete-files.sh on a real file system (a temp dir), fed NUL-separated names as
// `pglisten --print0` writes them; the last test runs the real pipeline from a pg_notify.

const SCRIPT = join(REPO_ROOT, 'examples/delete-files.sh');

let root: string;
let base: string;
let outside: string;

function setup(): void {
  root = mkdtempSync(join(tmpdir(), 'delete-files-'));
  base = join(root, 'files');
  outside = join(root, 'outside');
  mkdirSync(join(base, 'sub'), { recursive: true });
  mkdirSync(outside);
  for (const f of ['plain.txt', 'with space.txt', 'new\nline.txt', 'sub/deep.txt', 'keep.txt']) writeFileSync(join(base, f), 'x');
  writeFileSync(join(outside, 'secret.txt'), 'x');
  writeFileSync(join(root, 'files-sibling.txt'), 'x');
  // A stand-in for /etc/passwd: never name a real system file here — a broken script (or a test
  // deliberately breaking it to see the test fail) would delete it.
  mkdirSync(join(root, 'etc'));
  writeFileSync(join(root, 'etc', 'passwd'), 'x');
  symlinkSync(outside, join(base, 'escape')); // a symlinked directory leading out
  symlinkSync(join(outside, 'secret.txt'), join(base, 'link-out.txt')); // a symlink to a file outside
  symlinkSync(join(base, 'keep.txt'), join(base, 'link-in.txt')); // a symlink to a file inside
}

function run(names: string[], dir = base): { status: number | null; stderr: string } {
  const r = spawnSync('bash', [SCRIPT, dir], { input: names.map((n) => `${n}\0`).join(''), encoding: 'utf8' });
  return { status: r.status, stderr: r.stderr };
}

afterEach(() => {
  if (root) rmSync(root, { recursive: true, force: true });
});

describe('examples/delete-files.sh', () => {
  it('deletes regular files inside the directory, by absolute or relative name, including odd names', () => {
    setup();
    const r = run([join(base, 'plain.txt'), 'with space.txt', join(base, 'new\nline.txt'), 'sub/../sub/deep.txt']);
    expect(r.status).toBe(0);
    expect(existsSync(join(base, 'plain.txt'))).toBe(false);
    expect(existsSync(join(base, 'with space.txt'))).toBe(false);
    expect(existsSync(join(base, 'new\nline.txt'))).toBe(false);
    expect(existsSync(join(base, 'sub/deep.txt'))).toBe(false);
    expect(existsSync(join(base, 'keep.txt'))).toBe(true);
    expect(r.stderr.match(/^delete-files\.sh: deleted /gm)?.length).toBe(4);
    expect(r.stderr).toContain(`deleted $'${base}/new\\nline.txt'`); // logged quoted, on one line
  });

  it('refuses everything outside the directory: ../, absolute paths, symlinked directories, look-alike prefixes', () => {
    setup();
    const r = run([
      '../outside/secret.txt',
      `${base}/../outside/secret.txt`,
      join(outside, 'secret.txt'),
      'escape/secret.txt',
      `${base}-sibling.txt`,
      join(root, 'etc', 'passwd'),
    ]);
    expect(r.status).toBe(0);
    expect(existsSync(join(outside, 'secret.txt'))).toBe(true);
    expect(existsSync(join(root, 'files-sibling.txt'))).toBe(true);
    expect(existsSync(join(root, 'etc', 'passwd'))).toBe(true);
    expect(r.stderr.match(/: refused .*: outside /gm)?.length).toBe(6);
    expect(r.stderr).not.toContain('deleted');
  });

  it('never follows or deletes a symlink, and deletes no directories', () => {
    setup();
    const r = run(['link-out.txt', 'link-in.txt', 'sub', '.', '..', '', 'missing.txt']);
    expect(r.status).toBe(0);
    expect(existsSync(join(outside, 'secret.txt'))).toBe(true);
    expect(existsSync(join(base, 'keep.txt'))).toBe(true);
    expect(readdirSync(base).sort()).toEqual([
      'escape',
      'keep.txt',
      'link-in.txt',
      'link-out.txt',
      'new\nline.txt',
      'plain.txt',
      'sub',
      'with space.txt',
    ]);
    expect(r.stderr).toMatch(/refused link-out\.txt: a symbolic link/);
    expect(r.stderr).toMatch(/refused link-in\.txt: a symbolic link/);
    expect(r.stderr).toMatch(/refused sub: not a regular file/);
    expect(r.stderr).toMatch(/refused \.: not a file name/);
    expect(r.stderr).toMatch(/refused \.\.: not a file name/);
    expect(r.stderr).toMatch(/refused an empty name/);
    expect(r.stderr).toMatch(/skipped missing\.txt: no such file/);
  });

  it('needs an existing directory argument', () => {
    setup();
    expect(run([], join(root, 'nope')).status).toBe(2);
    expect(spawnSync('bash', [SCRIPT], { input: '' }).status).toBe(2);
    expect(run([], '/').status).toBe(2);
  });

  describe('behind pglisten --print0 (real PostgreSQL)', () => {
    let db: TestDatabase | undefined;
    afterEach(async () => {
      await db?.drop();
      db = undefined;
    });

    it('deletes what pg_notify names and refuses the escape attempts', async () => {
      setup();
      db = await createTestDatabase();
      const admin = await db.client();
      const pipeline = spawn(
        'bash',
        ['-c', `"${process.execPath}" "${join(REPO_ROOT, 'dist/src/bin/pglisten.js')}" -d "$URL" --listen=del --print0 | "${SCRIPT}" "$DIR"`],
        {
          env: { PATH: process.env.PATH, HOME: process.env.HOME, URL: db.url, DIR: base },
          stdio: ['ignore', 'ignore', 'pipe'],
          detached: true, // its own process group, so that the whole pipeline can be ended at once
        },
      );
      let stderr = '';
      pipeline.stderr.on('data', (d: Buffer) => {
        stderr += d.toString();
      });
      try {
        await waitFor(async () => {
          const { rows } = await admin.query(
            `SELECT 1 FROM pg_stat_activity WHERE datname = $1 AND application_name = 'pglisten' AND query LIKE 'LISTEN %' AND state = 'idle'`,
            [db?.name],
          );
          return rows.length === 1;
        }, 'pglisten to listen');
        for (const name of ['with space.txt', '../outside/secret.txt', 'new\nline.txt', 'link-out.txt']) {
          await admin.query(`SELECT pg_notify('del', $1)`, [name]);
        }
        await waitFor(() => (stderr.match(/\n/g)?.length ?? 0) >= 4, 'four decisions logged');
        expect(existsSync(join(base, 'with space.txt'))).toBe(false);
        expect(existsSync(join(base, 'new\nline.txt'))).toBe(false);
        expect(existsSync(join(outside, 'secret.txt'))).toBe(true);
        expect(stderr).toMatch(/refused \.\.\/outside\/secret\.txt: outside/);
        expect(stderr).toMatch(/refused link-out\.txt: a symbolic link/);
      } finally {
        if (pipeline.pid) process.kill(-pipeline.pid, 'SIGTERM');
      }
    });
  });
});
