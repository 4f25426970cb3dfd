import picomatch from 'picomatch';
import type { Envelope } from './envelope.js';

export interface RouteRule {
  /** Channel names or globs ("*", "public.*", "audit_?"); channels of row changes are "schema.table". */
  readonly from: readonly string[];
  readonly to: readonly string[];
}

export interface Router {
  /** The sink names an envelope goes to, each once, in rule order. */
  route(envelope: Envelope): readonly string[];
}

/** Routes by channel. Matching is cached per channel: the set of channels is small, events are many. */
export function createRouter(rules: readonly RouteRule[]): Router {
  const compiled = rules.map((rule) => ({
    matchers: rule.from.map((pattern) => picomatch(pattern, { dot: true, nobrace: false })),
    to: rule.to,
  }));
  const cache = new Map<string, readonly string[]>();
  return {
    route(envelope) {
      let sinks = cache.get(envelope.channel);
      if (sinks === undefined) {
        const found = new Set<string>();
        for (const rule of compiled) {
          if (rule.matchers.some((m) => m(envelope.channel))) for (const s of rule.to) found.add(s);
        }
        sinks = Object.freeze([...found]);
        if (cache.size < 10_000) cache.set(envelope.channel, sinks);
      }
      return sinks;
    },
  };
}
