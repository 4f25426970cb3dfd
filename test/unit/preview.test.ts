import { describe, expect, it } from 'vitest';
import { sinkDefinitions } from '../../sinks/index.js';
import { formatPreview, previewEvents, readEnvelopes } from '../../src/commands/preview.js';
import { parseConfig } from '../../src/config.js';

describe('preview (pure)', () => {
  it('reads one envelope, an array, or one per line; refuses one without a channel', () => {
    const one = readEnvelopes('{"channel":"jobs","payload":1}', 'f');
    expect(one).toMatchObject([{ id: 'preview-1', source: 'notify', channel: 'jobs', payload: 1 }]);
    expect(readEnvelopes('[{"channel":"a"},{"channel":"b","op":"INSERT"}]', 'f').map((e) => e.source)).toEqual(['notify', 'table']);
    expect(readEnvelopes('{"channel":"a"}\n\n{"channel":"b"}\n', 'f').map((e) => e.channel)).toEqual(['a', 'b']);
    expect(() => readEnvelopes('{"payload":1}', 'f.json')).toThrow('--event f.json: envelope 1 is not an object with a "channel" string');
    expect(() => readEnvelopes('{nope', 'f.json')).toThrow(/--event f.json: not JSON/);
  });
  it('reports filter errors, dropping and failing transforms, and a stdout line without sending', async () => {
    const config = parseConfig(
      {
        sinks: { out: { type: 'stdout' } },
        routes: [
          { name: 'math', from: 'jobs', filter: 'payload.n + 1.0 > 2.0', to: 'out' },
          { name: 'drop', from: 'jobs', transform: 'payload.missing', to: 'out' },
          { name: 'boom', from: 'jobs', transform: '$error("no")', to: 'out' },
          { name: 'shape', from: 'jobs', transform: '"job " & payload.n', to: 'out' },
        ],
      },
      { sinks: sinkDefinitions },
    );
    const [result] = await previewEvents(config, readEnvelopes('{"id":"e1","channel":"jobs","payload":{"n":"x"}}', 'f'));
    const routes = result!.routes;
    expect(routes[0]).toMatchObject({ route: 'math', channel: true, matches: false, filter: { error: expect.any(String) }, sinks: [] });
    expect(routes[1]).toMatchObject({ matches: true, transform: 'dropped', sinks: [] });
    expect(routes[2]).toMatchObject({ matches: true, transform: { error: expect.stringContaining('no') } });
    expect(routes[3]!.sinks).toEqual([{ sink: 'out', type: 'stdout', preview: { target: { stream: 'stdout' }, headers: {}, body: 'job x\n' } }]);
    const text = formatPreview([result!]);
    expect(text).toContain('route math (routes[0]): no match (filter error:');
    expect(text).toContain('route drop (routes[1]): match; the transform gave null: dropped, nothing is sent');
    expect(text).toContain('route shape (routes[3]): match (transformed)\n    → out (stdout): stream stdout\n        body: job x\n');
  });
});
