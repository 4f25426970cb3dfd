import ms from 'ms';
import { z } from 'zod';

/** A duration in config: a number of milliseconds or a string such as "500ms", "10s", "5m", "24h". */
export const duration = z.union([z.number().nonnegative(), z.string()]).transform((value, ctx) => {
  if (typeof value === 'number') return value;
  const parsed = ms(value as ms.StringValue);
  if (typeof parsed !== 'number' || !Number.isFinite(parsed) || parsed < 0) {
    ctx.addIssue({ code: 'custom', message: `not a duration: "${value}" (use e.g. 500ms, 10s, 5m, 24h)` });
    return z.NEVER;
  }
  return parsed;
});
