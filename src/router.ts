import picomatch from 'picomatch';
import type { Envelope } from './envelope.js';
import { type CompiledFilter, compileFilter } from './shape/filter.js';
import type { TransformSpec } from './shape/transform.js';

export interface RouteRule {
  /** Channel names or globs ("*", "public.*", "audit_?"); channels of row changes are "schema.table". */
  readonly from: readonly string[];
  readonly to: readonly string[];
  /** The route's label in metrics and logs; default its index. */
  readonly name?: string | undefined;
  /** A CEL expression over the envelope's fields (src/shape/filter.ts); the route matches only when it is true. */
  readonly filter?: string | undefined;
  /** What the route's sinks send instead of the envelope (applied by the pipeline, src/shape/). */
  readonly transform?: TransformSpec | undefined;
}

/** One rule as the router keeps it. `shape`: the index of the first rule with the same transform, -1 without one. */
export interface CompiledRule {
  readonly index: number;
  readonly label: string;
  readonly to: readonly string[];
  readonly transform: TransformSpec | undefined;
  readonly shape: number;
  readonly filter: CompiledFilter | undefined;
  readonly matchers: readonly ((channel: string) => boolean)[];
}

/** A route's filter left an event out: it said false, or it could not be evaluated (`error`). */
export type FilteredListener = (rule: CompiledRule, envelope: Envelope, error?: Error) => void;

export interface Router {
  /** The sink names an envelope goes to, each once, in rule order (filters applied). */
  route(envelope: Envelope): readonly string[];
  readonly rules: readonly CompiledRule[];
  /** Whether any rule has a transform (without one, every sink gets the envelope as it is). */
  readonly transforms: boolean;
  /**
   * The matching rules that bring an envelope to `sink`, when one of this channel's rules to that
   * sink has a transform; undefined when the sink gets the plain envelope. Uses what route() found
   * for this envelope, else evaluates the filters again (silently: an event read back from a sink's
   * backlog, a dead letter sent again).
   */
  rulesFor(envelope: Envelope, sink: string): readonly CompiledRule[] | undefined;
  /** Whether some route is for this channel (its events may still all be filtered out). */
  hasRoute(channel: string): boolean;
  /** Who hears of each event a filter leaves out in route() (the pipeline counts and logs them). One listener. */
  onFiltered(listener: FilteredListener): void;
}

interface ChannelPlan {
  /** The answer for every event of the channel when none of its rules has a filter. */
  readonly sinks: readonly string[] | undefined;
  readonly rules: readonly CompiledRule[];
  /** Sinks reached by a rule with a transform: this channel's rules to that sink. */
  readonly bySink: ReadonlyMap<string, readonly CompiledRule[]> | undefined;
}

function sameTransform(a: TransformSpec | undefined, b: TransformSpec | undefined): boolean {
  if (a === undefined || b === undefined) return false;
  if (typeof a === 'string' || typeof b === 'string') return a === b;
  return a.module === b.module;
}

/**
 * Routes by channel, then by each rule's filter. Matching by channel is cached per channel (the set
 * of channels is small, events are many), so a channel whose rules have no filter costs one map
 * lookup per event, as before filters existed. Filters are compiled here; config validation
 * (src/config.ts) compiled them already, so an error here is a programmer's.
 */
export function createRouter(rules: readonly RouteRule[]): Router {
  let filtered: FilteredListener | undefined;
  const compiled: CompiledRule[] = [];
  rules.forEach((rule, index) => {
    const first = rule.transform === undefined ? -1 : rules.findIndex((r) => sameTransform(r.transform, rule.transform));
    compiled.push({
      index,
      label: rule.name ?? String(index),
      to: rule.to,
      transform: rule.transform,
      shape: first,
      filter: rule.filter === undefined ? undefined : compileFilter(rule.filter),
      matchers: rule.from.map((pattern) => picomatch(pattern, { dot: true, nobrace: false })),
    });
  });
  const transforms = compiled.some((r) => r.transform !== undefined);
  const cache = new Map<string, ChannelPlan>();
  // What route() matched for an envelope whose sinks rulesFor() will ask about (channels with filters and transforms only).
  const matchedOf = new WeakMap<Envelope, readonly CompiledRule[]>();

  function planOf(channel: string): ChannelPlan {
    let plan = cache.get(channel);
    if (plan !== undefined) return plan;
    const matching = compiled.filter((rule) => rule.matchers.some((m) => m(channel)));
    let bySink: Map<string, CompiledRule[]> | undefined;
    for (const rule of matching) {
      if (rule.transform === undefined) continue;
      bySink ??= new Map();
      for (const sink of rule.to) bySink.set(sink, []);
    }
    if (bySink) for (const rule of matching) for (const sink of rule.to) bySink.get(sink)?.push(rule);
    const filtered = matching.some((rule) => rule.filter !== undefined);
    plan = { sinks: filtered ? undefined : Object.freeze(sinksOf(matching)), rules: matching, bySink };
    if (cache.size < 10_000) cache.set(channel, plan);
    return plan;
  }

  function evaluate(plan: ChannelPlan, e: Envelope, report: boolean): CompiledRule[] {
    const matched: CompiledRule[] = [];
    for (const rule of plan.rules) {
      if (rule.filter === undefined) {
        matched.push(rule);
        continue;
      }
      const result = rule.filter(e);
      if (result === true) matched.push(rule);
      else if (report) filtered?.(rule, e, result === false ? undefined : result);
    }
    return matched;
  }

  return {
    rules: compiled,
    transforms,
    hasRoute: (channel) => planOf(channel).rules.length > 0,
    onFiltered(listener) {
      filtered = listener;
    },
    route(envelope) {
      const plan = planOf(envelope.channel);
      if (plan.sinks !== undefined) return plan.sinks;
      const matched = evaluate(plan, envelope, true);
      if (plan.bySink !== undefined) matchedOf.set(envelope, matched);
      return sinksOf(matched);
    },
    rulesFor(envelope, sink) {
      const plan = planOf(envelope.channel);
      const toSink = plan.bySink?.get(sink);
      if (toSink === undefined) return undefined;
      if (plan.sinks !== undefined) return toSink;
      const matched = matchedOf.get(envelope) ?? evaluate(plan, envelope, false);
      return toSink.filter((rule) => matched.includes(rule));
    },
  };
}

function sinksOf(rules: readonly CompiledRule[]): string[] {
  const found = new Set<string>();
  for (const rule of rules) for (const s of rule.to) found.add(s);
  return [...found];
}
