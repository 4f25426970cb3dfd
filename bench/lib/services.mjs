// The test services (scripts/services.sh): their addresses, and the Kafka mock's control port.
import net from 'node:net';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const _ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The environment, completed from $SIDEKICK_SERVICES_DIR/env (or /var/tmp/pg-sidekick-services/env); the environment wins. */
export function servicesEnv() {
  const env = { ...process.env };
  const file = join(process.env.SIDEKICK_SERVICES_DIR || '/var/tmp/pg-sidekick-services', 'env');
  try {
    for (const line of readFileSync(file, 'utf8').split('\n')) {
      const i = line.indexOf('=');
      if (i > 0 && !env[line.slice(0, i)]) env[line.slice(0, i)] = line.slice(i + 1);
    }
  } catch {
    /* no env file: the environment alone */
  }
  return env;
}

/** One value of servicesEnv(), or a clear error naming the command that provides it. */
export function requireService(env, name) {
  const value = env[name];
  if (!value) throw new Error(`${name} not set and not in the services env file: run scripts/services.sh up`);
  return value;
}

/** Sends one line to the Kafka mock's control port (KAFKA_CONTROL); resolves with the text after "ok". */
export function kafkaControl(env, command) {
  const [host, port] = requireService(env, 'KAFKA_CONTROL').split(':');
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), host);
    let buf = '';
    socket.setEncoding('utf8');
    socket.setTimeout(5_000, () => socket.destroy(new Error(`kafka control "${command}": no answer`)));
    socket.on('data', (d) => {
      buf += d;
      if (!buf.includes('\n')) return;
      socket.end();
      const line = buf.trim();
      if (line.startsWith('ok')) resolve(line.slice(2).trim());
      else reject(new Error(`kafka control "${command}": ${line}`));
    });
    socket.on('error', reject);
    socket.write(`${command}\n`);
  });
}
