// The bare LISTEN client bench/listen.mjs compares `sidekick listen` with: node-postgres alone, run as
// its own process, that only counts. Writes 'F' at the first notification and `D<count>\n` at the end
// (the N-th notification of a burst, or the END marker of a sustained run).
//
//   node bench/lib/bare-listener.mjs URL CHANNEL N     (N = 0: wait for END)
import pg from 'pg';

const [url, channel, target] = process.argv.slice(2);
const c = new pg.Client({ connectionString: url, application_name: 'bench-bare' });
await c.connect();
let n = 0;
const N = Number(target);
c.on('notification', (m) => {
  if (++n === 1) process.stdout.write('F');
  if (n === N || m.payload === 'END') process.stdout.write(`D${m.payload === 'END' ? n - 1 : n}\n`);
});
await c.query(`LISTEN "${channel}"`);
