import { describe, expect, it } from 'vitest';
import { createMetrics } from '../../src/metrics.js';

/** The sample lines (`name{labels} value`) of a Prometheus text exposition. */
function samples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const space = line.lastIndexOf(' ');
    out.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return out;
}

describe('metrics: every per-sink series exists from the start (issue 16 item 10)', () => {
  it('a watched sink has each event counter, the failure counter per retriable, and the latency histogram at 0', async () => {
    const metrics = createMetrics();
    for (const sink of ['hook', 'kafka']) metrics.watchSink(sink, { queued: () => 0, delivered: () => 0 });
    const m = samples(await metrics.registry.metrics());
    for (const sink of ['hook', 'kafka']) {
      for (const name of [
        'sidekick_events_delivered_total',
        'sidekick_events_retried_total',
        'sidekick_events_dead_lettered_total',
        'sidekick_events_dropped_total',
        'sidekick_outbox_spilled_total',
        'sidekick_events_store_refused_total',
      ]) {
        expect(m.get(`${name}{sink="${sink}"}`), `${name}{sink="${sink}"}`).toBe(0);
      }
      expect(m.get(`sidekick_delivery_failures_total{sink="${sink}",retriable="true"}`)).toBe(0);
      expect(m.get(`sidekick_delivery_failures_total{sink="${sink}",retriable="false"}`)).toBe(0);
      expect(m.get(`sidekick_delivery_latency_seconds_count{sink="${sink}"}`)).toBe(0);
      expect(m.get(`sidekick_sink_queued{sink="${sink}"}`)).toBe(0);
      expect(m.get(`sidekick_outbox_sink_backlogged{sink="${sink}"}`)).toBe(0);
    }
  });

  it('counts on from 0 (the first dead letter is an increase of 1)', async () => {
    const metrics = createMetrics();
    let delivered = 0;
    metrics.watchSink('hook', { queued: () => 0, delivered: () => delivered });
    expect(samples(await metrics.registry.metrics()).get('sidekick_events_dead_lettered_total{sink="hook"}')).toBe(0);
    metrics.dead.inc({ sink: 'hook' });
    delivered = 3;
    const m = samples(await metrics.registry.metrics());
    expect(m.get('sidekick_events_dead_lettered_total{sink="hook"}')).toBe(1);
    expect(m.get('sidekick_events_delivered_total{sink="hook"}')).toBe(3);
  });

  it('no gauge named like a counter among the default process metrics (promtool rejects them)', async () => {
    const text = await createMetrics({ defaultMetrics: true }).registry.metrics();
    const types = new Map([...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((t) => [t[1], t[2]]));
    expect(types.get('nodejs_active_handles')).toBe('gauge');
    for (const [name = '', type] of types) if (name.endsWith('_total')) expect(type, name).toBe('counter');
  });
});
