// A bridge process for crash tests: the built pg-sidekick with one extra, test-only sink type that is
// slow and asynchronous (so events wait in memory, in flight, when the process is killed) and appends
// each delivered envelope to a file synchronously before acknowledging it.
// Usage: node test/support/bridge-child.mjs <database-url> <output-file>
import { appendFileSync } from 'node:fs';
import { createBridge } from '../../dist/src/bridge.js';
import { parseConfig } from '../../dist/src/config.js';
import { envelopeJson } from '../../dist/src/envelope.js';
import { createLogger } from '../../dist/src/logger.js';
import { sinkDefinitions } from '../../dist/sinks/index.js';

const [url, output] = process.argv.slice(2);
const slowFile = {
  type: 'slowfile',
  description: 'appends envelopes to a file after a random delay (tests)',
  options: {},
  create(_options, context) {
    return {
      name: context.name,
      type: 'slowfile',
      async start() {},
      async send(batch) {
        await new Promise((r) => setTimeout(r, Math.random() * 30));
        appendFileSync(output, batch.map((e) => `${JSON.stringify(envelopeJson(e))}\n`).join(''));
        return batch.map(() => ({ ok: true }));
      },
      async stop() {},
    };
  },
};
const config = parseConfig(
  {
    database: url,
    outbox: { pollInterval: '200ms', batchSize: 100 },
    sinks: { out: { type: 'slowfile', concurrency: 2, batch: { size: 20 } } },
    routes: [{ from: '*', to: 'out' }],
  },
  { file: 'bridge-child', env: {}, sinks: [...sinkDefinitions, slowFile] },
);
const bridge = createBridge({ config, logger: createLogger({ level: 'info' }) });
await bridge.start();
process.on('SIGTERM', () => {
  void bridge.stop().then(() => process.exit(0));
});
