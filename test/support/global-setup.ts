// vitest globalSetup: makes sure the real services the tests need are running, through the
// project's own scripts/services.sh (installs and starts what is missing, reuses what answers).
//   SIDEKICK_SERVICES=pg,redis   only these (default: pg,redis,rabbitmq,kafka)
//   DATABASE_URL / REDIS_URL / AMQP_URL / KAFKA_BROKERS set: that service is provided, not started
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { REPO_ROOT, SERVICE_ENV_KEY, type ServiceName } from './services.js';

const ALL: readonly ServiceName[] = ['pg', 'redis', 'rabbitmq', 'kafka'];

function wantedServices(): ServiceName[] {
  const raw = process.env.SIDEKICK_SERVICES?.trim();
  if (!raw) return [...ALL];
  const names = raw
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const n of names) {
    if (!(ALL as readonly string[]).includes(n)) {
      throw new Error(`SIDEKICK_SERVICES: unknown service "${n}" (known: ${ALL.join(', ')})`);
    }
  }
  return names as ServiceName[];
}

export function setup(): void {
  const services = wantedServices();
  const missing = services.filter((s) => !process.env[SERVICE_ENV_KEY[s]]);
  if (missing.length === 0) return;
  // 'tools': docker-compose, which the compose test uses to validate docker-compose.yml offline.
  // Synchronous with inherited stdio: the progress lines show, and tests start only after it.
  // Bounded: a first run on a clean machine installs packages (≈ 30 s), a rerun takes ≈ 50 ms.
  execFileSync('bash', [join(REPO_ROOT, 'scripts', 'services.sh'), 'up', ...missing, 'tools'], {
    cwd: REPO_ROOT,
    stdio: 'inherit',
    timeout: 10 * 60_000,
  });
}
