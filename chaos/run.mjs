#!/usr/bin/env node
// npm run chaos [-- --quick] [-- --only a,b] [-- --keep]: fault injection against real services (the
// ones scripts/services.sh starts). Prints one table and exits 1 on any loss, first-delivery order
// violation or failed check. The full run restarts the shared RabbitMQ and takes the Kafka mock
// broker down and up; --quick never touches a shared service (private PostgreSQL/Redis only).
import { formatTable, runScenarios, selectScenarios } from './lib/suite.mjs';

function parseArgs(argv) {
  const options = { quick: false, only: undefined, keepDir: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--quick') options.quick = true;
    else if (a === '--keep') options.keepDir = true;
    else if (a === '--only') options.only = (argv[++i] ?? '').split(',').filter(Boolean);
    else if (a.startsWith('--only=')) options.only = a.slice(7).split(',').filter(Boolean);
    else if (a === '--list') options.list = true;
    else if (a === '--help' || a === '-h') options.help = true;
    else throw new Error(`unknown argument ${a} (use --quick, --only a,b, --keep, --list)`);
  }
  return options;
}

const options = parseArgs(process.argv.slice(2));
if (options.help) {
  console.log('usage: npm run chaos [-- --quick] [-- --only NAME,…] [-- --keep] [-- --list]');
  process.exit(0);
}
const list = selectScenarios(options);
if (options.list) {
  for (const s of list) console.log(`${s.name.padEnd(26)} ${s.quick ? 'quick ' : 'full  '} ${s.description}`);
  process.exit(0);
}
const started = performance.now();
const rows = await runScenarios(list, { ...options, progress: (line) => console.error(line) });
const seconds = (performance.now() - started) / 1000;
console.log(
  `\npg-sidekick chaos (${options.quick ? 'quick' : 'full'} run, ${rows.length} scenario(s), ${seconds.toFixed(0)} s; Kafka = librdkafka's mock broker)\n`,
);
console.log(formatTable(rows));
const failed = rows.filter((r) => !r.ok);
console.log(failed.length ? `\n${failed.length} scenario(s) failed: ${failed.map((r) => r.name).join(', ')}` : '\nall scenarios passed');
process.exit(failed.length ? 1 : 0);
