import { compileTemplate, FatalError, type Envelope } from '../../src/sink-kit.js';

/** What a header value may hold (RFC 9110 field-value: visible characters, spaces and tabs, obs-text). */
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

export interface CompiledHeaders {
  /** The configured headers for one event, names lower-cased, `{field}` values filled. */
  render(e: Envelope): Record<string, string>;
  /** Lower-cased names of the configured headers (the sink's own never override them). */
  readonly names: readonly string[];
  /** Names whose value is a template: filled from the event, so not a secret of the config. */
  readonly templated: ReadonlySet<string>;
  /** The configured headers without placeholders (what a request without an event, `check`'s HEAD, carries). */
  readonly fixed: Readonly<Record<string, string>>;
}

/**
 * Compiles the `headers:` of a webhook sink. A value may hold `{field}` placeholders like the URL
 * (`X-Tenant: "{new.tenant_id}"`), filled without encoding; a value the event cannot fill is the
 * event's FatalError TEMPLATE_FIELD_MISSING, and a filled value that HTTP cannot carry (a line break)
 * is WEBHOOK_HEADER_INVALID: either would fail the same way on every attempt. Throws for an unknown
 * field (a config error with its key).
 */
export function compileHeaders(headers: Readonly<Record<string, string>>, basicAuth?: string): CompiledHeaders {
  // Header names are case-insensitive; lower-casing them lets configured ones replace ours cleanly.
  const fixed: Record<string, string> = {};
  if (basicAuth) fixed.authorization = basicAuth;
  const templates: [string, (e: Envelope) => string][] = [];
  for (const [name, value] of Object.entries(headers)) {
    const lower = name.toLowerCase();
    if (/\{[^{}]*\}/.test(value)) {
      delete fixed[lower];
      templates.push([lower, compileTemplate(value, undefined, { name: `header ${name}` })]);
    } else fixed[lower] = value;
  }
  const names = [...Object.keys(fixed), ...templates.map(([n]) => n)];
  const templated = new Set(templates.map(([n]) => n));
  if (templates.length === 0) return { render: () => ({ ...fixed }), names, templated, fixed };
  return {
    names,
    templated,
    fixed,
    render(e) {
      const out = { ...fixed };
      for (const [name, fill] of templates) {
        const value = fill(e);
        if (!FIELD_VALUE.test(value)) {
          throw new FatalError('WEBHOOK_HEADER_INVALID', `header ${name} of event ${e.id} would hold a character HTTP cannot carry (a line break?)`);
        }
        out[name] = value;
      }
      return out;
    },
  };
}
