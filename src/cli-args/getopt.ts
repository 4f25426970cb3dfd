/**
 * getopt_long, as the C tools we replace read their command lines: short options may be clustered
 * (`-H0l chan`, `-lchan`), a long option may be abbreviated to an unambiguous prefix, an argument may
 * follow `=` or be the next word, operands are collected wherever they appear, `--` ends the options,
 * and options act in order (`-V --bogus` prints the version). Error messages are glibc's. No I/O.
 */
export interface OptionSpec<K extends string = string> {
  /** The short letter, or the long name for long-only options. */
  readonly key: K;
  readonly long: string;
  readonly takesArgument: boolean;
}

export type GetoptResult<R> =
  | { readonly kind: 'done'; readonly result: R }
  | { readonly kind: 'error'; readonly message: string }
  | { readonly kind: 'operands'; readonly operands: readonly string[] };

/** The exact long option, or the only one `name` abbreviates; an error message otherwise. */
function findLong<K extends string>(specs: readonly OptionSpec<K>[], name: string): OptionSpec<K> | string {
  const exact = specs.find((s) => s.long === name);
  if (exact) return exact;
  const candidates = specs.filter((s) => s.long.startsWith(name));
  if (candidates.length === 1) return candidates[0] as OptionSpec<K>;
  if (candidates.length === 0) return `unrecognized option '--${name}'`;
  return `option '--${name}' is ambiguous; possibilities: ${candidates.map((s) => `'--${s.long}'`).join(' ')}`;
}

/**
 * Walks `argv`, calling `apply` for each option in order. `apply` returns a result to stop at once
 * (help, version) or undefined to go on. Without such a stop, the operands are returned.
 */
export function getoptLong<K extends string, R>(
  argv: readonly string[],
  specs: readonly OptionSpec<K>[],
  apply: (spec: OptionSpec<K>, value: string | undefined) => R | undefined,
): GetoptResult<R> {
  const short = new Map(specs.filter((s) => s.key.length === 1).map((s) => [s.key as string, s]));
  const operands: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === '--') {
      operands.push(...argv.slice(i + 1));
      break;
    }
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=');
      const found = findLong(specs, eq === -1 ? arg.slice(2) : arg.slice(2, eq));
      if (typeof found === 'string') return { kind: 'error', message: found };
      let value: string | undefined;
      if (found.takesArgument) {
        if (eq !== -1) value = arg.slice(eq + 1);
        else if (i + 1 < argv.length) value = argv[++i];
        else return { kind: 'error', message: `option '--${found.long}' requires an argument` };
      } else if (eq !== -1) {
        return { kind: 'error', message: `option '--${found.long}' doesn't allow an argument` };
      }
      const done = apply(found, value);
      if (done !== undefined) return { kind: 'done', result: done };
      continue;
    }
    if (arg.startsWith('-') && arg.length > 1) {
      // A cluster of short options; one that takes an argument swallows the rest of the word
      // (`-lchan`) or, when it ends the word, the next word (`-l chan`).
      for (let j = 1; j < arg.length; j++) {
        const letter = arg[j] as string;
        const spec = short.get(letter);
        if (!spec) return { kind: 'error', message: `invalid option -- '${letter}'` };
        let value: string | undefined;
        if (spec.takesArgument) {
          if (j + 1 < arg.length) value = arg.slice(j + 1);
          else if (i + 1 < argv.length) value = argv[++i];
          else return { kind: 'error', message: `option requires an argument -- '${letter}'` };
        }
        const done = apply(spec, value);
        if (done !== undefined) return { kind: 'done', result: done };
        if (spec.takesArgument) break;
      }
      continue;
    }
    operands.push(arg); // getopt permutes: operands may appear between options
  }
  return { kind: 'operands', operands };
}
