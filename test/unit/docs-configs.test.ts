import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { sinkDefinitions } from '../../sinks/index.js';
import { parseConfig } from '../../src/config.js';

// Every config a user may copy from the README or docs/ must pass the real schema. A block counts as
// a config when its top level has one of the config's own keys (sinks, capture, listen, routes, scheduler).
const ROOT = join(import.meta.dirname, '../..');
const files = [
  'README.md',
  ...readdirSync(join(ROOT, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .map((f) => `docs/${f}`),
];
const TOP = new Set(['sinks', 'capture', 'listen', 'routes', 'scheduler', 'database', 'http', 'outbox']);
// ${VAR} placeholders get harmless values of the right shape.
function placeholder(name: string): string {
  if (name.includes('BROKERS')) return '127.0.0.1:9092';
  if (name.startsWith('AMQP')) return 'amqp://guest:guest@127.0.0.1:5672';
  if (name.startsWith('REDIS')) return 'redis://127.0.0.1:6379';
  if (name.includes('HOOK') || name.includes('WEBHOOK')) return 'https://example.com/hook';
  if (name.includes('DATABASE') || name.startsWith('PG')) return 'postgres://u@127.0.0.1/db';
  return 'x';
}
const env = new Proxy({}, { get: (_t, k) => (typeof k === 'string' ? placeholder(k) : undefined) }) as Record<string, string>;

function configBlocks(file: string): { line: number; text: string }[] {
  const text = readFileSync(join(ROOT, file), 'utf8');
  const out: { line: number; text: string }[] = [];
  for (const m of text.matchAll(/^( *)```ya?ml\n([\s\S]*?)^\1```/gm)) {
    const indent = m[1]!.length;
    const body = m[2]!
      .split('\n')
      .map((l) => l.slice(indent))
      .join('\n');
    out.push({ line: text.slice(0, m.index).split('\n').length, text: body });
  }
  return out;
}

describe('configs shown in the README and docs/ pass the schema', () => {
  for (const file of files) {
    for (const block of configBlocks(file)) {
      let doc: unknown;
      try {
        doc = parse(block.text);
      } catch {
        continue;
      } // not YAML we can read: not a config
      if (!doc || typeof doc !== 'object' || Array.isArray(doc)) continue;
      const keys = Object.keys(doc);
      if (!keys.some((k) => TOP.has(k)) || !keys.every((k) => TOP.has(k) || k === 'log' || k === 'shutdown')) continue;
      it(`${file}:${block.line}`, () => {
        const full = { sinks: {}, ...(doc as object) } as Record<string, unknown>;
        // A snippet showing one sink may route to sinks defined elsewhere in the page.
        const routes = (full.routes as { to: string | string[] }[] | undefined) ?? [];
        const sinks = { ...(full.sinks as object) } as Record<string, unknown>;
        for (const r of routes) for (const to of [r.to].flat()) sinks[to] ??= { type: 'stdout' };
        expect(() => parseConfig({ ...full, sinks }, { file: `${file}:${block.line}`, env, sinks: sinkDefinitions })).not.toThrow();
      });
    }
  }
});
