import type pg from 'pg';
import type { Logger } from 'pino';
import { notifyEnvelope } from '../envelope.js';
import type { Metrics } from '../metrics.js';
import { createListener, type Listener } from '../pg/listener.js';
import type { Pipeline } from '../pipeline.js';

/**
 * The ephemeral source: plain LISTEN on the configured channels; every notification becomes an
 * envelope as it arrives (at-most-once: what is sent while the bridge is down is gone — use the
 * outbox for anything that must not be lost). Any payload is accepted: it is data, never an error.
 */
export function createNotifySource(params: {
  connection: pg.ClientConfig;
  channels: readonly string[];
  pipeline: Pipeline;
  logger: Logger;
  metrics?: Metrics;
}): { readonly listener: Listener; start(): Promise<void>; stop(): Promise<void> } {
  const { pipeline, metrics } = params;
  const logger = params.logger.child({ source: 'notify' });
  const listener = createListener({
    connection: params.connection,
    channels: params.channels,
    logger,
    applicationName: 'pg-sidekick listen',
    onNotification(n) {
      metrics?.received.inc({ source: 'notify', channel: n.channel });
      pipeline.publish(notifyEnvelope(n.channel, n.payload, n.processId));
    },
    onEvent(event) {
      metrics?.listenerConnected.set(event.type === 'connected' ? 1 : 0);
      if (event.type === 'connected' && event.reconnect) metrics?.reconnects.inc();
    },
  });
  return {
    listener,
    start: () => listener.start(),
    stop: () => listener.stop(),
  };
}
