import { pathToFileURL } from 'node:url';
import jsonata from 'jsonata';
import { type Envelope, envelopeJson } from '../envelope.js';
import { FatalError } from '../errors.js';

/** `routes[i].transform`: a JSONata expression, or `{ module: path }` (resolved against the config file's folder). */
export type TransformSpec = string | { readonly module: string };

/** The stable code of an event whose transform threw (or whose module could not be loaded): dead-lettered, never retried. */
export const TRANSFORM_FAILED = 'TRANSFORM_FAILED';

/**
 * A compiled transform: the value the sink sends instead of the envelope, or undefined when the event
 * is to be dropped (the expression or module gave undefined or null). Rejects with a FatalError
 * TRANSFORM_FAILED when the transform throws.
 */
export type CompiledTransform = (e: Envelope) => Promise<unknown>;

/**
 * Compiles a JSONata transform once; throws an Error naming the position of a syntax error. The
 * input is the envelope's public JSON (what `format: envelope` sends).
 */
export function compileJsonata(expression: string): CompiledTransform {
  let compiled: jsonata.Expression;
  try {
    compiled = jsonata(expression);
  } catch (error) {
    throw new Error(jsonataMessage(error));
  }
  return async (e) => {
    let result: unknown;
    try {
      result = await compiled.evaluate(envelopeJson(e));
    } catch (error) {
      throw new FatalError(TRANSFORM_FAILED, `transform failed for event ${e.id}: ${jsonataMessage(error)}`, { cause: error });
    }
    return result ?? undefined;
  };
}

/** JSONata's errors (plain objects at evaluation, not Errors) carry a code and a position apart from the message. */
function jsonataMessage(error: unknown): string {
  if (error === null || typeof error !== 'object' || typeof (error as { message?: unknown }).message !== 'string') return String(error);
  const { position, token } = error as { position?: number; token?: string };
  const at = position === undefined ? '' : ` (at character ${position}${token === undefined ? '' : `, near "${token}"`})`;
  return `${(error as { message: string }).message}${at}`;
}

/**
 * Loads a module transform once (its default export, `(envelope) => value | null | Promise<…>`). The
 * returned transform awaits the load: a module that cannot be loaded fails every event it shapes
 * (TRANSFORM_FAILED, dead-lettered) and `loaded` rejects, so the caller can say so at start.
 */
export function loadModuleTransform(file: string): { transform: CompiledTransform; loaded: Promise<void> } {
  const fn = import(pathToFileURL(file).href).then((mod: { default?: unknown }) => {
    if (typeof mod.default !== 'function') throw new Error(`${file} has no default export function (export default (envelope) => value)`);
    return mod.default as (envelope: Record<string, unknown>) => unknown;
  });
  // Observed here, so that an unused failing load is not an unhandled rejection.
  const loaded = fn.then(() => undefined);
  loaded.catch(() => {});
  return {
    loaded,
    async transform(e) {
      let shape: (envelope: Record<string, unknown>) => unknown;
      try {
        shape = await fn;
      } catch (error) {
        throw new FatalError(TRANSFORM_FAILED, `transform module ${file} could not be loaded: ${messageOf(error)}`, { cause: error });
      }
      let result: unknown;
      try {
        result = await shape(envelopeJson(e));
      } catch (error) {
        throw new FatalError(TRANSFORM_FAILED, `transform module ${file} threw for event ${e.id}: ${messageOf(error)}`, { cause: error });
      }
      return result ?? undefined;
    },
  };
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
