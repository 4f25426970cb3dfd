import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../support/services.js';

/**
 * The formatter (Biome, `npm run lint`) wraps code at 150 columns but leaves long strings and
 * comments alone; this is the hard limit for every line of the project's code, strings included.
 */
const LIMIT = 160;

describe('line length', () => {
  it(`no line of src/, sinks/, test/, bench/, chaos/ or scripts/ is over ${LIMIT} characters`, () => {
    const files = execFileSync('git', ['ls-files', 'src', 'sinks', 'test', 'bench', 'chaos', 'scripts'], { cwd: REPO_ROOT, encoding: 'utf8' })
      .split('\n')
      .filter((f) => /\.(ts|mjs|js|sh)$/.test(f));
    expect(files.length).toBeGreaterThan(100);
    const long: string[] = [];
    for (const file of files) {
      readFileSync(join(REPO_ROOT, file), 'utf8')
        .split('\n')
        .forEach((line, i) => {
          if (line.length > LIMIT) long.push(`${file}:${i + 1} (${line.length})`);
        });
    }
    expect(long).toEqual([]);
  });
});
