import type pg from 'pg';
import type { Logger } from 'pino';
import type { Delivery } from '../dispatcher/index.js';
import { notifyEnvelope, type Envelope } from '../envelope.js';
import type { Metrics } from '../metrics.js';
import { createListener, type Listener } from '../pg/listener.js';
import type { Pipeline } from '../pipeline.js';
import { createDeadLetterStore } from './dead-letters.js';

/**
 * The ephemeral source: plain LISTEN on the configured channels; every notification becomes an
 * envelope as it arrives (at-most-once: what is sent while the bridge is down is gone — use the
 * outbox for anything that must not be lost). Any payload is accepted: it is data, never an error.
 * An event a sink gives up on is stored in sidekick.dead_letters when the schema is installed
 * (src/source/dead-letters.ts), else logged whole and counted as dropped.
 */
export function createNotifySource(params: {
  connection: pg.ClientConfig;
  channels: readonly string[];
  pipeline: Pipeline;
  logger: Logger;
  metrics?: Metrics;
}): { readonly listener: Listener; start(): Promise<void>; stop(): Promise<void>; close(): Promise<void> } {
  const { pipeline, metrics } = params;
  const logger = params.logger.child({ source: 'notify' });
  const deadLetters = createDeadLetterStore({ connection: params.connection, logger, metrics });
  const settled = (sink: string, envelope: Envelope) => (d: Delivery) => {
    if (d.status === 'dead') deadLetters.add(sink, envelope, d.attempts, d.error);
  };
  const listener = createListener({
    connection: params.connection,
    channels: params.channels,
    logger,
    applicationName: 'pg-sidekick listen',
    onNotification(n) {
      metrics?.received.inc({ source: 'notify', channel: n.channel });
      const envelope = notifyEnvelope(n.channel, n.payload, n.processId);
      for (const routed of pipeline.publish(envelope)) void routed.delivery.then(settled(routed.sink, envelope));
    },
    onEvent(event) {
      metrics?.listenerConnected.set(event.type === 'connected' ? 1 : 0);
      if (event.type === 'connected' && event.reconnect) metrics?.reconnects.inc();
    },
  });
  return {
    listener,
    start: () => listener.start(),
    /** Stops listening; deliveries in flight go on. */
    stop: () => listener.stop(),
    /** After the deliveries: stores the last dead letters and disconnects. */
    close: () => deadLetters.close(),
  };
}
