import { z } from 'zod';
import { cloudEventsShape, compileTemplate, duration } from '../../src/sink-kit.js';
import { BODY_FORMATS } from '../amqp/body.js';

/**
 * ioredis options pg-sidekick sets itself, because delivery guarantees depend on them: a command
 * issued while disconnected must fail at once (our dispatcher retries it with backoff and keeps
 * per-key order) instead of waiting in ioredis's offline queue or being re-sent behind our back.
 */
export const FORCED_CLIENT_OPTIONS = ['lazyConnect', 'enableOfflineQueue', 'maxRetriesPerRequest', 'autoResendUnfulfilledCommands'] as const;

const clientOptions = z.record(z.string(), z.unknown()).superRefine((value, ctx) => {
  for (const key of FORCED_CLIENT_OPTIONS) {
    if (key in value)
      ctx.addIssue({
        code: 'custom',
        path: [key],
        message: `set by pg-sidekick (fail fast while disconnected, retried by the dispatcher); remove it`,
      });
  }
});

const node = z.union([z.string().min(1), z.strictObject({ host: z.string().min(1), port: z.number().int().min(1).max(65535) })]);

export const redisStreamOptions = {
  /**
   * redis:// or rediss:// (TLS) URL: redis://[user:password@]host:port[/db]. Required unless
   * `options.sentinels` or `cluster` is given.
   */
  url: z
    .string()
    .regex(/^rediss?:\/\//i, 'must be a redis:// or rediss:// URL')
    .optional(),
  /**
   * Passed to ioredis as is: `tls`, `password`, `username`, `db`, `sentinels` + `name` (Sentinel),
   * `connectTimeout`, … Not allowed:
   * lazyConnect, enableOfflineQueue, maxRetriesPerRequest, autoResendUnfulfilledCommands.
   */
  options: clientOptions.default({}),
  /** Redis Cluster: seed nodes ("host:port" or {host, port}) and ioredis ClusterOptions. */
  cluster: z
    .strictObject({
      nodes: z.array(node).min(1),
      /** ioredis ClusterOptions (e.g. natMap, scaleReads); `options` above become its redisOptions. */
      options: z.record(z.string(), z.unknown()).default({}),
    })
    .optional(),
  /** Stream key template. Default "pg:{channel}" (row changes: "pg:public.orders"). */
  stream: z
    .string()
    .min(1)
    .superRefine((value, ctx) => {
      try {
        compileTemplate(value);
      } catch (error) {
        ctx.addIssue({ code: 'custom', message: `stream: ${(error as Error).message}` });
      }
    })
    .default('pg:{channel}'),
  /** What the `data` field holds: envelope (default, JSON) | payload | cloudevents. */
  format: z.enum(BODY_FORMATS).default('envelope'),
  /** `format: cloudevents` only: the `source` and `type` templates (docs/cloudevents.md). */
  cloudevents: z.strictObject(cloudEventsShape).prefault({}),
  /** How long a batch may wait for Redis's replies before it counts as failed (retriable). Default 30s. */
  timeout: duration.default(30_000),
  /** Trim each stream to about this many entries (XADD MAXLEN ~ N; approximate = cheap). Default: no trimming. */
  maxLen: z.number().int().min(1).optional(),
};

export type RedisStreamOptions = z.infer<z.ZodObject<typeof redisStreamOptions>>;
