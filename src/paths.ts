import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The package root (where package.json and sql/ live), from src/ under vitest or dist/src/ when built. */
export const PACKAGE_ROOT: string = (() => {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'sql'))) return dir;
    dir = dirname(dir);
  }
  throw new Error('pg-sidekick: cannot find the package root (package.json + sql/)');
})();

export const SQL_DIR = join(PACKAGE_ROOT, 'sql');
