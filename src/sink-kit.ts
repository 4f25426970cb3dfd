// The sink kit: the one module a sink imports from src/ (docs/add-sink.md). What a sink needs from
// the core and nothing else — the contract, the error taxonomy, the envelope and its renderings, the
// option helpers, the reconnect helper and the waits — so that the core can move its files around
// without touching a sink, and a new sink's author reads one list. A test
// (test/contract/kit-boundary.test.ts) keeps sinks/ from importing anything else of src/.

// The contract: what a sink is, what send() answers, how a sink type is defined and registered.
export {
  defineSink,
  OK,
  type ItemOutcome,
  type SendResult,
  type Sink,
  type SinkContext,
  type SinkDefaults,
  type SinkDefinition,
  type SinkOptions,
  type TypedSinkDefinition,
} from './sink.js';

// Errors: RetriableError (with `unavailable` for a destination that is not there), FatalError (dead
// letter), ConfigError (bad options), and the one table of network error codes.
export {
  ConfigError,
  classifyError,
  errorCode,
  errorMessage,
  FatalError,
  NETWORK_ERRORS,
  networkFailure,
  RetriableError,
  SidekickError,
  type NetworkFailure,
  type RetriableOptions,
} from './errors.js';

// The envelope and the helpers every sink renders it with.
export {
  compileTemplate,
  envelopeJson,
  payloadText,
  shapedContentType,
  TEMPLATE_FIELD_MISSING,
  TEMPLATE_FIELDS,
  type Envelope,
  type EnvelopeSource,
  type RowOp,
  type ShapedBody,
  type TemplateField,
  type TemplateOptions,
} from './envelope.js';

// CloudEvents 1.0: the `cloudevents` option shape and the two modes (binary, structured).
export {
  cloudEventData,
  CLOUDEVENTS_CONTENT_TYPE,
  cloudEventsShape,
  createCloudEvents,
  DEFAULT_CLOUDEVENTS_SOURCE,
  defaultCloudEventType,
  structuredCloudEvent,
  type CloudEvent,
  type CloudEventsOptions,
} from './cloudevents.js';

// Options: a duration ("10s", 500) in ms.
export { duration } from './duration.js';

// Connections: lazy connect, one attempt in flight, retire on error (src/sink-link.ts).
export { createLink, type Link, type LinkOptions } from './sink-link.js';

// Waiting: every wait takes a signal; a sink's timeouts use bounded().
export { bounded, sleep, type BoundOptions } from './wait.js';

// Logging and identity: URLs without their credentials, the version for a User-Agent.
export { redactUrl, type Logger } from './logger.js';
export { VERSION } from './version.js';
