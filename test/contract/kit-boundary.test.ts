import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { sinkDefinitions } from '../../sinks/index.js';

// The sink kit's rule (docs/add-sink.md): a sink imports from src/ only src/sink-kit.ts, so the core
// can move its files without touching a sink, and a sink's author reads one list of what is there.
// The registry (sinks/index.ts) also registers the scheduler's intake, src/scheduler/later-sink.ts.

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const KIT = 'src/sink-kit.ts';
const REGISTRY_MAY_IMPORT = new Set([KIT, 'src/scheduler/later-sink.ts']);

function tsFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((d) => {
    const path = join(dir, d.name);
    if (d.isDirectory()) return tsFiles(path);
    return d.name.endsWith('.ts') ? [path] : [];
  });
}

/** The repository paths of what a file imports from src/ (static, dynamic and type-only imports). */
function srcImports(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const specifiers = [...text.matchAll(/(?:from|import)\s*\(?\s*'(\.[^']+)'/g)].map((m) => m[1] as string);
  return specifiers.map((s) => relative(root, resolve(dirname(file), s)).replace(/\.js$/, '.ts')).filter((path) => path.startsWith('src/'));
}

describe('sink kit boundary', () => {
  const files = tsFiles(join(root, 'sinks'));

  it('finds the sinks (the scan is not empty)', () => {
    expect(files.length).toBeGreaterThan(10);
    expect(files.some((f) => srcImports(f).includes(KIT))).toBe(true);
  });

  it('every file of a sink folder imports from src/ only the sink kit', () => {
    const offending = files
      .filter((f) => relative(root, f) !== 'sinks/index.ts')
      .flatMap((f) =>
        srcImports(f)
          .filter((path) => path !== KIT)
          .map((path) => `${relative(root, f)} → ${path}`),
      );
    expect(offending).toEqual([]);
  });

  it("the registry imports from src/ only the kit and the scheduler's later sink", () => {
    const registry = srcImports(join(root, 'sinks/index.ts'));
    expect(registry.filter((path) => !REGISTRY_MAY_IMPORT.has(path))).toEqual([]);
  });

  it('registers every sink type once, each with a description and its own option shape', () => {
    const types = sinkDefinitions.map((d) => d.type);
    expect(new Set(types).size).toBe(types.length);
    expect(types).toEqual(expect.arrayContaining(['stdout', 'webhook', 'kafka', 'amqp', 'redis-stream', 'later']));
    for (const d of sinkDefinitions) {
      expect(d.description.length, d.type).toBeGreaterThan(10);
      expect(typeof d.create, d.type).toBe('function');
      expect(Object.isFrozen(d), d.type).toBe(true);
    }
  });
});
