import { existsSync, readFileSync } from 'node:fs';
import { dirname, extname, resolve } from 'node:path';
import { parse as parseYaml, YAMLParseError } from 'yaml';
import { z } from 'zod';
import { captureSpecsFromConfig, OPERATIONS, type CaptureConfigEntry } from './capture/spec.js';
import { duration } from './duration.js';
import { ConfigError, errorMessage } from './errors.js';
import type { RouteRule } from './router.js';
import { expandPglater, resolveScheduler, schedulerSchema, type SchedulerConfig } from './scheduler/config.js';
import { compileFilter } from './shape/filter.js';
import { compileJsonata } from './shape/transform.js';
import type { SinkDefinition } from './sink.js';

/** Retry policy of one sink (the `retry:` key every sink accepts). */
export const retrySchema = z.strictObject({
  /** Attempts in all, the first included, before an event is dead-lettered. Default 10. */
  attempts: z.number().int().min(1).default(10),
  /** Delay before the first retry; doubled each time, with jitter. Default 500ms. */
  initialDelay: duration.default(500),
  /** Longest delay between two attempts (also caps Retry-After). Default 5m. */
  maxDelay: duration.default(300_000),
  /**
   * Dead-letter an event older than this even if attempts remain. Default: none. Failures where the
   * destination is unreachable do not use up attempts, so this is what bounds an outage.
   */
  maxAge: duration.optional(),
});

/** Options the dispatcher applies to every sink, whatever its type. */
function dispatchShape(defaults: { concurrency?: number; batchSize?: number } = {}) {
  return {
    retry: retrySchema.prefault({}),
    /** send() calls in flight at once. Default 8 (webhook: 32). */
    concurrency: z
      .number()
      .int()
      .min(1)
      .max(10_000)
      .default(defaults.concurrency ?? 8),
    batch: z
      .strictObject({
        /** Most envelopes per send() call. Default 100. */
        size: z
          .number()
          .int()
          .min(1)
          .max(100_000)
          .default(defaults.batchSize ?? 100),
        /** How long to wait for a batch to fill. Default 0 (send what is there now). */
        linger: duration.default(0),
      })
      .prefault({}),
    /** Events held in memory for this sink before ephemeral ones are refused (counted, logged). Default 100000. */
    maxQueued: z.number().int().min(1).default(100_000),
  };
}

export type RetryOptions = z.infer<typeof retrySchema>;
export type DispatchOptions = z.infer<z.ZodObject<ReturnType<typeof dispatchShape>>>;

const operationSchema = z.preprocess((v) => (typeof v === 'string' ? v.toLowerCase() : v), z.enum(OPERATIONS));
const columnSelection = z.union([z.literal('*'), z.array(z.string().min(1)).min(1)]);

/** One `capture:` entry: a table whose row changes go to the outbox (triggers from `sidekick triggers`). */
const captureSchema = z.strictObject({
  /** `schema.table` or `table` (schema public); quote parts with "…" for dots. Case-sensitive. */
  table: z.string().min(1),
  /** Which operations get a trigger. Default: insert, update, delete (or the keys of `columns`). */
  operations: z.array(operationSchema).min(1).optional(),
  /** "*" (default), a list of columns, or per operation: { insert: "*", update: [id, status], delete: [id] }. */
  columns: z
    .union([
      columnSelection,
      z.strictObject({
        insert: columnSelection.optional(),
        update: columnSelection.optional(),
        delete: columnSelection.optional(),
      }),
    ])
    .default('*'),
  /** Ordering key columns (events of one key are delivered in order). Default: the primary key. */
  key: z
    .union([z.string().min(1), z.array(z.string().min(1)).min(1)])
    .transform((v) => (typeof v === 'string' ? [v] : v))
    .optional(),
  /** statement (default): one outbox insert per statement from transition tables; row: one per row. */
  mode: z.enum(['statement', 'row']).default('statement'),
  /**
   * Capture only rows for which this SQL boolean expression is true: over the new row for INSERT and
   * UPDATE, over the old row for DELETE (columns by name, or as t.column). Default: every row.
   */
  where: z.string().min(1).optional(),
  /** UPDATE only when one of these columns IS DISTINCT FROM its old value. Default: every UPDATE. */
  changed: z.array(z.string().min(1)).min(1).optional(),
});

/** The durable drain: outbox → router → sinks (`outbox:`). */
export const outboxSchema = z.strictObject({
  /**
   * auto (default): drain when `capture:` is set or the sidekick schema is installed; true: always
   * (installs the schema when missing); false: never (only `listen:` channels are served).
   */
  enabled: z.union([z.boolean(), z.literal('auto')]).default('auto'),
  /** Outbox rows read per query. Default 1000. */
  batchSize: z.number().int().min(1).max(10_000).default(1000),
  /** Safety-net poll while idle; the NOTIFY wake-up is only a hint. Default 1s. */
  pollInterval: duration.default(1000),
  /**
   * Events per sink held in memory. Beyond it that sink's events wait in its durable backlog
   * (sidekick.deliveries) instead, so a slow or failing sink never holds up the others. Default 10000.
   */
  sinkBuffer: z.number().int().min(1).max(1_000_000).default(10_000),
  /**
   * An event a sink still has not acknowledged after this long is copied to that sink's durable
   * backlog, so its outbox row can go. It bounds what a crash makes the *other* sinks receive again
   * (an outbox row stays until every sink has its event): about this long of traffic. Default 1s.
   */
  checkpointAfter: duration.default(1000),
});

export type OutboxOptions = z.infer<typeof outboxSchema>;

const channelList = z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]).transform((v) => (typeof v === 'string' ? [v] : v));

/** One `routes:` entry (docs/shaping.md for `filter` and `transform`). */
const routeSchema = z.strictObject({
  /** The route's label in metrics (`sidekick_events_filtered_total{route}`) and logs. Default: its index. */
  name: z
    .string()
    .regex(/^[A-Za-z0-9_.-]+$/, 'route names use letters, digits, _ . -')
    .optional(),
  from: channelList,
  to: channelList,
  /** A CEL expression over the event (op, new, old, payload, …); only events for which it is true take this route. Default: all. */
  filter: z.string().min(1).optional(),
  /**
   * What this route's sinks send instead of the envelope: a JSONata expression, or `{ module: ./file.mjs }`
   * (relative to the config file) whose default export maps the envelope to the body. null drops the event. Default: the envelope.
   */
  transform: z.union([z.string().min(1), z.strictObject({ module: z.string().min(1) })]).optional(),
});

const baseSchema = z.strictObject({
  /** postgres:// URL or conninfo. Default: DATABASE_URL, then the libpq PG* variables. */
  database: z.string().min(1).optional(),
  /** Plain NOTIFY channels to LISTEN on (ephemeral, at-most-once). Case-sensitive. */
  listen: z.array(z.string().min(1).max(63)).default([]),
  /** Named sinks; each has a `type` and that type's options. */
  sinks: z.record(z.string().regex(/^[A-Za-z0-9_.-]+$/, 'sink names use letters, digits, _ . -'), z.looseObject({ type: z.string() })),
  /** Tables whose row changes are captured durably (channel "schema.table"). See `sidekick triggers`. */
  capture: z.array(captureSchema).default([]),
  outbox: outboxSchema.prefault({}),
  /** Which channels go to which sinks. Every `to` must name a sink. */
  routes: z.array(routeSchema).default([]),
  log: z
    .strictObject({
      /** trace | debug | info | warn | error | fatal. Default: LOG_LEVEL or info. */
      level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).optional(),
      /**
       * json (one JSON line per event) | pretty (human-readable) | auto: pretty when stderr is a
       * terminal, else json. Default: LOG_FORMAT or auto.
       */
      format: z.enum(['auto', 'json', 'pretty']).optional(),
    })
    .prefault({}),
  shutdown: z
    .strictObject({
      /** How long a stop waits for in-flight deliveries. Default 10s. */
      timeout: duration.default(10_000),
    })
    .prefault({}),
  /** The scheduler (durable schedules, pglater jobs); see src/scheduler/config.ts. Default: off unless a `later` sink exists. */
  scheduler: schedulerSchema.optional(),
  /**
   * The operations endpoint: /metrics (Prometheus), /healthz, /readyz. Off when this key is absent;
   * `http: {}` serves it on 127.0.0.1:9187.
   */
  http: z
    .strictObject({
      /** Set false to keep the section but not serve. Default true. */
      enabled: z.boolean().default(true),
      /** Address to bind. Default 127.0.0.1 (loopback); 0.0.0.0 in a container so probes and Prometheus reach it. */
      host: z.string().min(1).default('127.0.0.1'),
      /** TCP port; 0 picks a free one. A numeric string is accepted (for `${PORT}`). Default 9187. */
      port: z
        .union([z.number(), z.string().regex(/^\d+$/, 'expected a port number').transform(Number)])
        .pipe(z.number().int().min(0).max(65_535))
        .default(9187),
    })
    .optional(),
});

/** The http section once parsed; `enabled` is false when the section is absent. */
export interface HttpOptions {
  readonly enabled: boolean;
  readonly host: string;
  readonly port: number;
}

const HTTP_OFF: HttpOptions = { enabled: false, host: '127.0.0.1', port: 9187 };

export interface SinkEntry {
  readonly name: string;
  readonly type: string;
  readonly definition: SinkDefinition;
  readonly options: Readonly<Record<string, unknown>>;
  readonly dispatch: DispatchOptions;
}

export interface Config {
  readonly file: string | undefined;
  readonly database: string | undefined;
  readonly listen: readonly string[];
  readonly capture: readonly CaptureConfigEntry[];
  readonly outbox: OutboxOptions;
  readonly sinks: readonly SinkEntry[];
  /** Module transforms' paths are absolute here (resolved against the config file's folder). */
  readonly routes: readonly RouteRule[];
  readonly log: { readonly level: string | undefined; readonly format: 'auto' | 'json' | 'pretty' | undefined };
  readonly shutdown: { readonly timeout: number };
  readonly scheduler: SchedulerConfig;
  readonly http: HttpOptions;
}

export interface ParseOptions {
  /** Named in every error message. */
  readonly file?: string;
  readonly env?: Readonly<Record<string, string | undefined>>;
  readonly sinks: readonly SinkDefinition[];
}

type Path = readonly PropertyKey[];

export function formatPath(path: Path): string {
  let out = '';
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else out += out === '' ? String(p) : `.${String(p)}`;
  }
  return out || '(top level)';
}

function issueLines(error: z.ZodError, prefix: Path = []): string[] {
  return error.issues.map((issue) => {
    if (issue.code === 'unrecognized_keys') {
      return issue.keys.map((k) => `${formatPath([...prefix, ...issue.path, k])}: unknown key`).join('\n  - ');
    }
    return `${formatPath([...prefix, ...issue.path])}: ${issue.message}`;
  });
}

function fail(file: string | undefined, lines: string[]): never {
  const where = file ? ` in ${file}` : '';
  throw new ConfigError(`invalid config${where}:\n  - ${lines.join('\n  - ')}`);
}

const VAR = /\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;

/**
 * Replaces ${VAR} and ${VAR:-default} in every string of the parsed document; `$${` is a literal `${`.
 * A variable that is not set is a problem: pushed to `problems` when given (so that it is reported
 * with every other problem of the file), else thrown as a ConfigError.
 */
export function interpolate(
  value: unknown,
  env: ParseOptions['env'],
  file: string | undefined,
  path: PropertyKey[] = [],
  problems?: string[],
): unknown {
  if (typeof value === 'string') {
    return value.replace(VAR, (whole, name: string | undefined, fallback: string | undefined) => {
      if (name === undefined) return '${';
      const found = env?.[name];
      if (found !== undefined && found !== '') return found;
      if (fallback !== undefined) return fallback;
      const problem = `${formatPath(path)}: environment variable ${name} is not set (write \${${name}:-default} to give a default)`;
      if (!problems) fail(file, [problem]);
      problems.push(problem);
      return whole;
    });
  }
  if (Array.isArray(value)) return value.map((v, i) => interpolate(v, env, file, [...path, i], problems));
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, interpolate(v, env, file, [...path, k], problems)]));
  }
  return value;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

/**
 * Validates a parsed document (YAML or JSON) against the schema; throws one ConfigError naming every
 * problem, each with its path. Every part is checked even when another part is broken (the sinks
 * and routes from the document itself), so one run reports all there is to fix.
 */
export function parseConfig(document: unknown, options: ParseOptions): Config {
  const { file } = options;
  const problems: string[] = [];
  const interpolated = interpolate(document ?? {}, options.env ?? {}, file, [], problems);
  // `scheduler.pglater` is shorthand for a channel, a `later` sink and a route: expanded first.
  const expanded = isRecord(interpolated) ? expandPglater(interpolated) : { doc: interpolated, problems: [] };
  problems.push(...expanded.problems);
  const doc = expanded.doc;
  const raw = isRecord(doc) ? doc : {};
  const base = baseSchema.safeParse(doc);
  if (!base.success) problems.push(...issueLines(base.error));
  const byType = new Map(options.sinks.map((d) => [d.type, d]));
  const sinks: SinkEntry[] = [];
  // Each sink against its type's schema, from the document (the base schema only knows `type`).
  const sinkDocs = isRecord(raw.sinks) ? raw.sinks : {};
  for (const [name, sinkDoc] of Object.entries(sinkDocs)) {
    // Not an object or no string `type`: the base schema reported it.
    if (!isRecord(sinkDoc) || typeof sinkDoc.type !== 'string') continue;
    const definition = byType.get(sinkDoc.type);
    if (!definition) {
      problems.push(`${formatPath(['sinks', name, 'type'])}: unknown sink type "${sinkDoc.type}" (known: ${[...byType.keys()].join(', ')})`);
      continue;
    }
    const schema = z.strictObject({ type: z.literal(definition.type), ...dispatchShape(definition.defaults), ...definition.options });
    const parsed = schema.safeParse(sinkDoc);
    if (!parsed.success) {
      problems.push(...issueLines(parsed.error, ['sinks', name]));
      continue;
    }
    const { type, retry, concurrency, batch, maxQueued, ...rest } = parsed.data as Record<string, unknown> & DispatchOptions & { type: string };
    sinks.push({ name, type, definition, options: rest, dispatch: { retry, concurrency, batch, maxQueued } });
  }
  // Every `to` names a sink (`to: name` or `to: [names]`; other shapes are the base schema's).
  const names = new Set(Object.keys(sinkDocs));
  const routeDocs = Array.isArray(raw.routes) ? raw.routes : [];
  const routeNames = new Map<string, number>();
  routeDocs.forEach((route: unknown, i) => {
    if (!isRecord(route)) return;
    problems.push(...shapingProblems(route, i, file, routeNames));
    const targets: [unknown, Path][] =
      typeof route.to === 'string'
        ? [[route.to, ['routes', i, 'to']]]
        : Array.isArray(route.to)
          ? route.to.map((to: unknown, j): [unknown, Path] => [to, ['routes', i, 'to', j]])
          : [];
    for (const [to, path] of targets) {
      if (typeof to === 'string' && to !== '' && !names.has(to)) {
        problems.push(`${formatPath(path)}: no sink named "${to}" (sinks: ${[...names].join(', ') || 'none'})`);
      }
    }
  });
  const capture = base.success ? { success: true as const, data: base.data.capture } : z.array(captureSchema).default([]).safeParse(raw.capture);
  if (capture.success) {
    try {
      captureSpecsFromConfig(capture.data, file);
    } catch (error) {
      problems.push((error as Error).message);
    }
  }
  if (!base.success || problems.length > 0) fail(file, problems);
  return deepFreeze({
    file,
    database: base.data.database,
    listen: base.data.listen,
    capture: base.data.capture,
    outbox: base.data.outbox,
    sinks,
    routes: base.data.routes.map((route) => resolveRoute(route, file)),
    log: base.data.log,
    shutdown: base.data.shutdown,
    scheduler: resolveScheduler(
      base.data.scheduler,
      sinks.some((s) => s.type === 'later'),
    ),
    http: base.data.http ?? HTTP_OFF,
  }) as Config;
}

/**
 * A route's filter and transform, compiled once here so that a syntax or type error is a config error
 * with its key path (the router and the pipeline compile them again, from the checked text).
 */
function shapingProblems(route: Record<string, unknown>, i: number, file: string | undefined, names: Map<string, number>): string[] {
  const problems: string[] = [];
  if (typeof route.name === 'string') {
    const earlier = names.get(route.name);
    if (earlier !== undefined) problems.push(`${formatPath(['routes', i, 'name'])}: "${route.name}" already names routes[${earlier}]`);
    else names.set(route.name, i);
  }
  if (typeof route.filter === 'string' && route.filter !== '') {
    try {
      compileFilter(route.filter);
    } catch (error) {
      problems.push(`${formatPath(['routes', i, 'filter'])}: ${errorMessage(error)} (CEL)`);
    }
  }
  const transform = route.transform;
  if (typeof transform === 'string' && transform !== '') {
    try {
      compileJsonata(transform);
    } catch (error) {
      problems.push(`${formatPath(['routes', i, 'transform'])}: ${errorMessage(error)} (JSONata)`);
    }
  } else if (isRecord(transform) && typeof transform.module === 'string' && transform.module !== '') {
    const path = moduleOf(transform.module, file);
    if (!existsSync(path)) problems.push(`${formatPath(['routes', i, 'transform', 'module'])}: no such file ${path}`);
  }
  return problems;
}

function moduleOf(path: string, file: string | undefined): string {
  return resolve(file === undefined ? process.cwd() : dirname(resolve(file)), path);
}

function resolveRoute(route: z.infer<typeof routeSchema>, file: string | undefined): RouteRule {
  if (route.transform === undefined || typeof route.transform === 'string') return route;
  return { ...route, transform: { module: moduleOf(route.transform.module, file) } };
}

/** Reads a YAML or JSON file; syntax errors name the file, line and column. */
export function readConfigDocument(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new ConfigError(`cannot read config file ${file}: ${(error as Error).message}`, { cause: error });
  }
  if (extname(file).toLowerCase() === '.json') {
    try {
      return JSON.parse(text);
    } catch (error) {
      throw new ConfigError(`invalid JSON in ${file}: ${(error as Error).message}`, { cause: error });
    }
  }
  try {
    return parseYaml(text, { prettyErrors: true, uniqueKeys: true });
  } catch (error) {
    if (error instanceof YAMLParseError) {
      const pos = error.linePos?.[0];
      const at = pos ? ` at line ${pos.line}, column ${pos.col}` : '';
      throw new ConfigError(`invalid YAML in ${file}${at}: ${error.message.split('\n')[0]}`, { cause: error });
    }
    // Whatever else the parser throws is about the file too: e.g. the ReferenceError "Excessive
    // alias count indicates a resource exhaustion attack" of an alias bomb (a "billion laughs").
    throw new ConfigError(`invalid YAML in ${file}: ${errorMessage(error).split('\n')[0]}`, { cause: error });
  }
}

export function loadConfig(file: string, options: Omit<ParseOptions, 'file'>): Config {
  return parseConfig(readConfigDocument(file), { ...options, file });
}
