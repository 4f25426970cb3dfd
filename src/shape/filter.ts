import { Environment } from '@marcbachmann/cel-js';
import type { Envelope } from '../envelope.js';

/**
 * The variables a route filter sees: every field of the envelope's public JSON, always declared.
 * A field the event does not have is null (a NOTIFY has no `op`, an INSERT no `old`), so
 * `op == "UPDATE"` is simply false for a NOTIFY instead of an error. JSON numbers are CEL doubles
 * (`new.total > 100` works; arithmetic with an int literal needs `new.total + 1.0`).
 */
export const FILTER_VARIABLES = [
  'id',
  'seq',
  'source',
  'channel',
  'op',
  'schema',
  'table',
  'key',
  'new',
  'old',
  'payload',
  'at',
  'txid',
  'pid',
] as const;

/** The answer of a compiled filter for one event: true/false, or why it could not be evaluated. */
export type FilterResult = boolean | Error;
export type CompiledFilter = (e: Envelope) => FilterResult;

// One environment for every filter: declaring the variables is the only setup there is.
const env = new Environment({ homogeneousAggregateLiterals: false });
for (const name of FILTER_VARIABLES) env.registerVariable(name, 'dyn');

/**
 * Compiles a CEL route filter once (parse and type-check). Throws an Error whose message says what is
 * wrong (the config names the key): a syntax error, an unknown variable, a type error, or a result
 * that cannot be a boolean. The function it returns never throws.
 */
export function compileFilter(expression: string): CompiledFilter {
  const checked = env.check(expression);
  if (!checked.valid) throw new Error(firstLine(checked.error?.message ?? 'invalid expression'));
  if (checked.type !== 'bool' && checked.type !== 'dyn') throw new Error(`the expression is of type ${checked.type}; a filter must be a boolean`);
  const evaluate = env.parse(expression);
  return (e) => {
    try {
      const result = evaluate(activation(e));
      return typeof result === 'boolean'
        ? result
        : new Error(`the filter gave ${typeof result === 'bigint' ? 'an int' : typeof result}, not a boolean`);
    } catch (error) {
      return error instanceof Error ? new Error(firstLine(error.message)) : new Error(String(error));
    }
  };
}

function firstLine(message: string): string {
  return message.split('\n', 1)[0] as string;
}

/** The envelope's fields as CEL variables, null when absent (`raw` is not one: it is `payload`'s text). */
function activation(e: Envelope): Record<string, unknown> {
  return {
    id: e.id,
    seq: e.seq ?? null,
    source: e.source,
    channel: e.channel,
    op: e.op ?? null,
    schema: e.schema ?? null,
    table: e.table ?? null,
    key: e.key ?? null,
    new: e.new ?? null,
    old: e.old ?? null,
    payload: e.payload ?? null,
    at: e.at,
    txid: e.txid ?? null,
    pid: e.pid ?? null,
  };
}
