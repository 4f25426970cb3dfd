// pgbench against a server from ./pg-server.mjs.
import { spawn } from 'node:child_process';
import { PG_BIN } from './pg-server.mjs';

/**
 * Runs pgbench with a custom script file; resolves { tps, transactions }. `rate` (-R) paces the
 * transactions (a steady stream of writers); synchronous_commit=on for the writers whatever the
 * server default.
 */
export function pgbench(server, database, script, { clients, threads = Math.min(clients, 4), seconds, rate }) {
  return new Promise((resolve, reject) => {
    const argv = [
      '-n',
      '-h',
      server.host,
      '-p',
      String(server.port),
      '-U',
      'postgres',
      '-c',
      String(clients),
      '-j',
      String(threads),
      '-T',
      String(seconds),
      '-f',
      script,
    ];
    if (rate) argv.push('-R', String(rate));
    argv.push(database);
    const child = spawn(`${PG_BIN}/pgbench`, argv, { env: { ...process.env, PGOPTIONS: '-c synchronous_commit=on' } });
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
    });
    child.stderr.on('data', (d) => {
      out += d;
    });
    child.on('error', reject);
    child.on('exit', (code) => {
      const tps = /tps = ([\d.]+) \(without initial connection time\)/.exec(out);
      const done = /number of transactions actually processed: (\d+)/.exec(out);
      if (code !== 0 || !tps || !done) reject(new Error(`pgbench failed (${code}):\n${out}`));
      else resolve({ tps: Number(tps[1]), transactions: Number(done[1]) });
    });
  });
}
