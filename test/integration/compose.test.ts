import { spawn, spawnSync } from 'node:child_process';
import { createHmac, randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { sinkDefinitions } from '../../sinks/index.js';
import { parseConfig } from '../../src/config.js';
import { waitFor } from '../support/db.js';
import { REPO_ROOT } from '../support/services.js';

// Docker cannot run on the test machines: the stack is validated offline, by Debian's docker-compose
// (v1.29, `config -q` needs no engine) and by reading the files, and the config it mounts goes
// through the same schema as every other config.

const path = (...p: string[]) => join(REPO_ROOT, ...p);
const read = (...p: string[]) => readFileSync(path(...p), 'utf8');

type Service = {
  image?: string;
  build?: unknown;
  command?: unknown;
  environment?: Record<string, unknown>;
  volumes?: string[];
  ports?: string[];
  healthcheck?: { test: unknown };
  depends_on?: Record<string, { condition: string }>;
};
const compose = parseYaml(read('docker-compose.yml'), { merge: true }) as { services: Record<string, Service> };
const services = compose.services;

function dockerCompose(): string | undefined {
  const probe = spawnSync('docker-compose', ['version'], { encoding: 'utf8' });
  return probe.status === 0 ? 'docker-compose' : undefined;
}

/** Sink types and top-level keys the example configs use that this build does not know yet. */
function missingFeatures(configText: string): string[] {
  const doc = parseYaml(configText) as { sinks?: Record<string, { type: string }>; capture?: unknown };
  const known = new Set(sinkDefinitions.map((d) => d.type));
  const missing = [...new Set(Object.values(doc.sinks ?? {}).map((s) => s.type))].filter((t) => !known.has(t)).map((t) => `sink type "${t}"`);
  if (doc.capture !== undefined) {
    try {
      parseConfig({ sinks: {}, capture: [] }, { env: {}, sinks: sinkDefinitions });
    } catch {
      missing.push('the capture: section');
    }
  }
  return missing;
}

/** ${VAR} references (without a :-default, so they must be set) in the values of a sidekick config. */
function requiredVariables(configText: string): string[] {
  const found: string[] = [];
  const walk = (v: unknown): void => {
    if (typeof v === 'string') for (const m of v.matchAll(/(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g)) found.push(m[1] as string);
    else if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === 'object') Object.values(v).forEach(walk);
  };
  walk(parseYaml(configText));
  return found;
}

describe('docker-compose.yml (validated offline)', () => {
  const bin = dockerCompose();

  it.skipIf(!bin)('passes `docker-compose config -q`, and the check rejects a broken file', () => {
    const ok = spawnSync(bin!, ['-f', 'docker-compose.yml', 'config', '-q'], { cwd: REPO_ROOT, encoding: 'utf8' });
    expect(ok.stderr).toBe('');
    expect(ok.status).toBe(0);
    // The validator is real: the same file with a misspelt condition fails.
    const dir = mkdtempSync(join(tmpdir(), 'sidekick-compose-'));
    try {
      const broken = read('docker-compose.yml').replace('condition: service_healthy', 'condition: service_happy');
      writeFileSync(join(dir, 'docker-compose.yml'), broken);
      const bad = spawnSync(bin!, ['-f', join(dir, 'docker-compose.yml'), 'config', '-q'], { cwd: dir, encoding: 'utf8' });
      expect(bad.status).not.toBe(0);
      expect(bad.stderr).toMatch(/service_happy/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  if (!bin) {
    it.todo('docker-compose config -q: skipped because the `docker-compose` binary is missing (Debian: apt-get install docker-compose)');
  }

  // dclint (devDependency, pinned): its errors — e.g. no-build-and-image, a service with both `build`
  // and `image` but no pull_policy — fail the test; its style warnings do not.
  it('passes dclint without errors, and dclint catches a service with both build and image', () => {
    const dclint = (file: string) =>
      spawnSync(process.execPath, [path('node_modules', 'dclint', 'bin', 'dclint.cjs'), file, '--formatter', 'json'], {
        cwd: REPO_ROOT,
        encoding: 'utf8',
      });
    const errorsOf = (r: ReturnType<typeof dclint>) =>
      (JSON.parse(r.stdout) as { messages: { type: string; rule: string; message: string }[] }[])
        .flatMap((f) => f.messages)
        .filter((m) => m.type === 'error');
    const ok = dclint('docker-compose.yml');
    expect(errorsOf(ok), ok.stdout).toEqual([]);
    expect(ok.status).toBe(0);
    const dir = mkdtempSync(join(tmpdir(), 'sidekick-dclint-'));
    try {
      writeFileSync(join(dir, 'docker-compose.yml'), read('docker-compose.yml').replaceAll('    pull_policy: build\n', ''));
      const bad = dclint(join(dir, 'docker-compose.yml'));
      expect(bad.status).not.toBe(0);
      expect(errorsOf(bad).map((m) => m.rule)).toEqual(['no-build-and-image', 'no-build-and-image']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('has PostgreSQL 15, Kafka (KRaft), RabbitMQ with management, Redis 7, a webhook receiver and pg-sidekick, each with a healthcheck', () => {
    expect(services.postgres?.image).toBe('postgres:15');
    expect(services.kafka?.image).toMatch(/^apache\/kafka:3\./);
    expect(services.kafka?.environment?.KAFKA_PROCESS_ROLES).toBe('broker,controller');
    expect(services.rabbitmq?.image).toBe('rabbitmq:3-management');
    expect(services.redis?.image).toBe('redis:7');
    expect(services['webhook-receiver']?.command).toEqual(['node', '/app/webhook-receiver.mjs']);
    expect(services.sidekick?.build).toBe('.');
    for (const name of ['postgres', 'kafka', 'rabbitmq', 'redis', 'webhook-receiver', 'sidekick']) {
      expect(services[name]?.healthcheck, `${name} healthcheck`).toBeDefined();
    }
    expect(JSON.stringify(services.sidekick?.healthcheck?.test)).toContain('/readyz');
  });

  it('starts pg-sidekick only once every dependency is healthy (or, for one-shots, done)', () => {
    expect(services.sidekick?.depends_on).toEqual({
      postgres: { condition: 'service_healthy' },
      kafka: { condition: 'service_healthy' },
      'kafka-topics': { condition: 'service_completed_successfully' },
      rabbitmq: { condition: 'service_healthy' },
      redis: { condition: 'service_healthy' },
      'webhook-receiver': { condition: 'service_healthy' },
      'sidekick-setup': { condition: 'service_completed_successfully' },
    });
  });

  it('publishes ports on loopback only and mounts files that exist', () => {
    for (const [name, s] of Object.entries(services)) {
      for (const p of s.ports ?? []) expect(p, `${name} port`).toMatch(/^127\.0\.0\.1:/);
      for (const v of s.volumes ?? []) {
        const source = v.split(':')[0] as string;
        if (source.startsWith('./')) expect(existsSync(path(source)), `${name} mounts ${source}`).toBe(true);
      }
    }
  });

  it('gives the bridge every ${VAR} its config needs, and the Kafka topic its template makes', () => {
    const config = read('examples', 'compose', 'sidekick.yaml');
    const needed = requiredVariables(config);
    expect(needed.sort()).toEqual(['AMQP_URL', 'DATABASE_URL', 'HOOK_SECRET', 'HOOK_TOKEN', 'REDIS_URL']);
    for (const name of ['sidekick', 'sidekick-setup']) {
      const env = services[name]?.environment ?? {};
      for (const v of needed) expect(env, `${name} sets ${v}`).toHaveProperty(v);
    }
    expect(JSON.stringify(services['kafka-topics']?.command)).toContain('"pg.public.orders"');
    expect(config).toContain('topic: "pg.{schema}.{table}"');
    expect(config).toMatch(/- table: public\.orders/);
  });

  const composeConfig = read('examples', 'compose', 'sidekick.yaml');
  const missing = missingFeatures(composeConfig);
  it.skipIf(missing.length > 0)(
    `examples/compose/sidekick.yaml passes the project's config schema${missing.length ? ` — SKIPPED until these land: ${missing.join(', ')}` : ''}`,
    () => {
      const env = Object.fromEntries(Object.entries(services.sidekick?.environment ?? {}).map(([k, v]) => [k, String(v)]));
      const config = parseConfig(parseYaml(composeConfig), { file: 'examples/compose/sidekick.yaml', env, sinks: sinkDefinitions });
      expect(config.sinks.map((s) => s.type).sort()).toEqual(['amqp', 'kafka', 'redis-stream', 'stdout', 'webhook']);
      expect(config.http).toEqual({ enabled: true, host: '0.0.0.0', port: 9187 });
    },
  );
});

describe('Dockerfile', () => {
  const text = read('Dockerfile');
  // Issue 16 item 13: a HEALTHCHECK on /readyz made an orchestrator that restarts unhealthy
  // containers restart the bridge during a database outage. The image's check is liveness.
  it('is multi-stage on node:20-slim, installs production dependencies only, runs as a non-root user, and checks liveness (/healthz)', () => {
    expect(text.match(/^FROM node:20-slim AS \w+$/gm)).toHaveLength(2);
    expect(text).toMatch(/npm ci --omit=dev/);
    expect(text).toMatch(/^USER node$/m);
    const healthcheck = /^HEALTHCHECK (?:.*\\\n)*.*$/m.exec(text)?.[0] ?? '';
    expect(healthcheck).toContain('/healthz');
    expect(healthcheck).not.toContain('/readyz');
    expect(text).toMatch(/^ENTRYPOINT \["node", "\/app\/dist\/src\/cli\.js"\]$/m);
    expect(read('.dockerignore')).toMatch(/^node_modules$/m);
  });
});

describe('deploy/ (Kubernetes example)', () => {
  const kustomization = parseYaml(read('deploy', 'kustomization.yaml')) as { resources: string[] };
  const docs = kustomization.resources.flatMap((file) =>
    parseAllDocuments(read('deploy', file)).map((d) => {
      expect(d.errors, file).toEqual([]);
      // biome-ignore lint/suspicious/noExplicitAny: a Kubernetes manifest's spec, read as loosely as the tests below read it
      return d.toJS() as { kind: string; metadata: { name: string }; spec?: any; data?: Record<string, string>; stringData?: Record<string, string> };
    }),
  );
  const byKind = (kind: string) => docs.find((d) => d.kind === kind)!;

  it('parses, and kustomization lists every manifest in deploy/', () => {
    expect(docs.map((d) => d.kind).sort()).toEqual(['ConfigMap', 'Deployment', 'PodDisruptionBudget', 'Secret', 'Service']);
  });

  it('runs two replicas with readiness on /readyz, liveness on /healthz, config from the ConfigMap and secrets from the Secret', () => {
    const deployment = byKind('Deployment');
    expect(deployment.spec.replicas).toBe(2);
    const pod = deployment.spec.template.spec;
    const container = pod.containers[0];
    expect(container.readinessProbe.httpGet).toEqual({ path: '/readyz', port: 'metrics' });
    expect(container.livenessProbe.httpGet).toEqual({ path: '/healthz', port: 'metrics' });
    expect(container.ports).toEqual([{ name: 'metrics', containerPort: 9187 }]);
    expect(container.resources.requests).toBeDefined();
    expect(container.securityContext.readOnlyRootFilesystem).toBe(true);
    expect(pod.securityContext.runAsNonRoot).toBe(true);
    const mount = container.volumeMounts.find((m: { name: string }) => m.name === 'config');
    expect(container.args).toEqual(['run', '--config', `${mount.mountPath}/sidekick.yaml`]);
    expect(pod.volumes).toEqual([{ name: 'config', configMap: { name: byKind('ConfigMap').metadata.name } }]);
    expect(container.envFrom).toEqual([{ secretRef: { name: byKind('Secret').metadata.name } }]);
    expect(byKind('Service').spec.selector).toEqual(deployment.spec.selector.matchLabels);
  });

  it('lets the bridge stop gracefully before Kubernetes kills it', () => {
    const config = parseYaml(byKind('ConfigMap').data!['sidekick.yaml'] as string) as { shutdown: { timeout: string } };
    const grace = byKind('Deployment').spec.template.spec.terminationGracePeriodSeconds as number;
    expect(Number.parseInt(config.shutdown.timeout, 10) + 5).toBeLessThanOrEqual(grace); // +5 s: the CLI's margin for closing sinks
  });

  it("provides every ${VAR} of the ConfigMap's config from the Secret or the container env", () => {
    const text = byKind('ConfigMap').data!['sidekick.yaml'] as string;
    const container = byKind('Deployment').spec.template.spec.containers[0];
    const provided = new Set([...Object.keys(byKind('Secret').stringData ?? {}), ...container.env.map((e: { name: string }) => e.name)]);
    for (const v of requiredVariables(text)) expect(provided.has(v), `${v} is provided`).toBe(true);
  });

  const k8sConfig = (parseAllDocuments(read('deploy', 'configmap.yaml'))[0]!.toJS() as { data: Record<string, string> }).data[
    'sidekick.yaml'
  ] as string;
  const k8sMissing = missingFeatures(k8sConfig);
  it.skipIf(k8sMissing.length > 0)(
    `the ConfigMap's sidekick.yaml passes the project's config schema${k8sMissing.length ? ` — SKIPPED until these land: ${k8sMissing.join(', ')}` : ''}`,
    () => {
      const env = { ...byKind('Secret').stringData, KAFKA_BROKERS: 'kafka-0:9092,kafka-1:9092' };
      const config = parseConfig(parseYaml(k8sConfig), { file: 'deploy/configmap.yaml', env, sinks: sinkDefinitions });
      expect(config.http).toEqual({ enabled: true, host: '0.0.0.0', port: 9187 });
      expect(config.listen).toEqual([]); // replicas would each receive every plain NOTIFY
    },
  );
});

describe('examples/webhook-receiver.mjs', () => {
  const secret = 'whsec_c2lkZWtpY2stZGVtby1zZWNyZXQtMzItYnl0ZXMhIQ==';
  const children: ReturnType<typeof spawn>[] = [];
  afterAll(() => {
    for (const c of children) c.kill('SIGKILL');
  });

  it('prints each request, answers 204, and refuses a bad Standard Webhooks signature with 401', async () => {
    const child = spawn(process.execPath, [path('examples', 'webhook-receiver.mjs')], {
      env: { PATH: process.env.PATH ?? '', PORT: '0', HOST: '127.0.0.1', HOOK_SECRET: secret },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(child);
    let out = '';
    let err = '';
    child.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
    });
    child.stderr!.on('data', (c: Buffer) => {
      err += c.toString();
    });
    const port = await waitFor(() => /listening on [\d.]+:(\d+)/.exec(err)?.[1], 'the receiver to listen');
    const body = JSON.stringify({ id: '42', op: 'INSERT', table: 'orders' });
    const id = randomUUID();
    const timestamp = String(Math.floor(Date.now() / 1000));
    // Signed here from the spec, independently of the receiver's code.
    const key = Buffer.from(secret.slice('whsec_'.length), 'base64');
    const signature = `v1,${createHmac('sha256', key).update(`${id}.${timestamp}.${body}`).digest('base64')}`;
    const post = (sig: string) =>
      fetch(`http://127.0.0.1:${port}/hooks/public/orders`, {
        method: 'POST',
        body,
        headers: { 'content-type': 'application/json', 'webhook-id': id, 'webhook-timestamp': timestamp, 'webhook-signature': sig },
      });
    expect((await post(signature)).status).toBe(204);
    expect((await post(`v1,${Buffer.from('forged').toString('base64')}`)).status).toBe(401);
    expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(204);
    await waitFor(() => out.trim().split('\n').length >= 2, 'two printed requests');
    const lines = out
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines[0]).toMatchObject({ method: 'POST', path: '/hooks/public/orders', id, signature: 'ok', body: { id: '42', op: 'INSERT' } });
    expect(lines[1]).toMatchObject({ signature: 'INVALID' });
    child.kill('SIGTERM');
    await new Promise((resolve) => child.on('exit', resolve));
  });
});
