// The bridge as a real process: `node dist/src/cli.js run --config <file>`, so it can be killed with
// SIGKILL or stopped with SIGTERM exactly as an operator would.
import { spawn } from 'node:child_process';
import { createWriteStream, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { ROOT } from './services.mjs';
import { freePort, waitFor } from './util.mjs';

const CLI = join(ROOT, 'dist', 'src', 'cli.js');

/**
 * Starts one bridge process with `config` (an object written as YAML into `dir`; `http` is added on a
 * free port). Resolves once /readyz answers 200 (unless `waitReady: false`).
 */
export async function startBridge(dir, config, { name = 'bridge', waitReady = true, readyTimeoutMs = 30_000 } = {}) {
  const port = await freePort();
  const file = join(dir, `${name}.yaml`);
  writeFileSync(file, stringify({ log: { level: 'info', format: 'json' }, ...config, http: { host: '127.0.0.1', port } }));
  const logFile = createWriteStream(join(dir, `${name}.log`), { flags: 'a' });
  const proc = spawn(process.execPath, [CLI, 'run', '--config', file], { stdio: ['ignore', 'ignore', 'pipe'], cwd: ROOT });
  const state = { errors: 0, lines: [], stopped: undefined, exit: undefined };
  let partial = '';
  proc.stderr.on('data', (chunk) => {
    logFile.write(chunk);
    partial += String(chunk);
    const lines = partial.split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      state.lines.push(line);
      if (state.lines.length > 200) state.lines.shift();
      try {
        const entry = JSON.parse(line);
        if (entry.level >= 50) state.errors++;
        if (entry.msg === 'stopped') state.stopped = entry;
      } catch {
        /* not JSON: keep it in the tail */
      }
    }
  });
  const exited = new Promise((resolve) =>
    proc.once('exit', (code, signal) => {
      state.exit = { code, signal };
      logFile.end();
      resolve(state.exit);
    }),
  );
  const readyz = async () => {
    const res = await fetch(`http://127.0.0.1:${port}/readyz`, { signal: AbortSignal.timeout(1_000) });
    await res.arrayBuffer();
    return res.status === 200;
  };
  const bridge = {
    name,
    proc,
    port,
    state,
    exited,
    readyz: () => readyz().catch(() => false),
    async waitReady(timeoutMs = readyTimeoutMs) {
      await waitFor(async () => state.exit || readyz(), `${name} to be ready (/readyz 200)`, timeoutMs, 50).catch((err) => {
        throw new Error(`${err.message}\nlast log lines:\n${state.lines.slice(-15).join('\n')}`);
      });
      if (state.exit) throw new Error(`${name} exited (${JSON.stringify(state.exit)}) before it was ready:\n${state.lines.slice(-15).join('\n')}`);
    },
    /** SIGKILL; resolves once the process is gone. */
    async kill9() {
      if (!state.exit) proc.kill('SIGKILL');
      await exited;
    },
    /** SIGTERM; resolves with { ms, code, signal, stopped } once it exits (or SIGKILLs it after `hardLimitMs`). */
    async sigterm(hardLimitMs = 60_000) {
      const t0 = performance.now();
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), hardLimitMs);
      const exit = await exited;
      clearTimeout(timer);
      return { ms: Math.round(performance.now() - t0), ...exit, stopped: Boolean(state.stopped) };
    },
  };
  if (waitReady) {
    try {
      await bridge.waitReady();
    } catch (err) {
      await bridge.kill9();
      throw err;
    }
  }
  return bridge;
}

/** The sink config of a webhook receiver with fast retries (overridable). */
export function webhookSinkConfig(url, extra = {}) {
  return { type: 'webhook', url, timeout: '2s', retry: { attempts: 1000, initialDelay: '100ms', maxDelay: '1s' }, ...extra };
}
