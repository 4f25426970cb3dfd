#!/usr/bin/env node
// A tiny webhook receiver for trying pg-sidekick: prints every request it gets (one line of JSON
// per event) and answers 204. With HOOK_SECRET set it checks the Standard Webhooks signature
// (webhook-id, webhook-timestamp, webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">)
// and answers 401 to a request that does not carry a valid one.
//
//   PORT=8080 HOOK_SECRET=whsec_… node examples/webhook-receiver.mjs
//
// No dependencies: Node 20's node:http and node:crypto only.
import { createHmac, timingSafeEqual } from 'node:crypto';
import { createServer } from 'node:http';

const port = Number(process.env.PORT ?? 8080);
const host = process.env.HOST ?? '0.0.0.0';
const secrets = (process.env.HOOK_SECRET ?? '')
  .split(/[\s,]+/)
  .filter(Boolean)
  .map((s) =>
    // whsec_<base64> is the Standard Webhooks form; anything else is used as raw bytes.
    s.startsWith('whsec_') ? Buffer.from(s.slice('whsec_'.length), 'base64') : Buffer.from(s, 'utf8'),
  );

function signatureOk(id, timestamp, body, header) {
  if (!id || !timestamp || !header) return false;
  const offered = header
    .split(' ')
    .filter((p) => p.startsWith('v1,'))
    .map((p) => Buffer.from(p.slice(3), 'base64'));
  return secrets.some((key) => {
    const expected = createHmac('sha256', key).update(`${id}.${timestamp}.${body}`).digest();
    return offered.some((sig) => sig.length === expected.length && timingSafeEqual(sig, expected));
  });
}

const server = createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    if (req.url === '/healthz') {
      res.writeHead(204).end();
      return;
    }
    const body = Buffer.concat(chunks).toString('utf8');
    const id = req.headers['webhook-id'];
    let signature = 'not checked';
    if (secrets.length > 0) {
      signature = signatureOk(id, req.headers['webhook-timestamp'], body, req.headers['webhook-signature']) ? 'ok' : 'INVALID';
    }
    let parsed = body;
    try {
      parsed = JSON.parse(body);
    } catch {
      /* not JSON: print it as text */
    }
    process.stdout.write(`${JSON.stringify({ at: new Date().toISOString(), method: req.method, path: req.url, id, signature, body: parsed })}\n`);
    res.writeHead(signature === 'INVALID' ? 401 : 204).end();
  });
});

server.listen(port, host, () => {
  const address = server.address();
  process.stderr.write(`webhook receiver listening on ${address.address}:${address.port}${secrets.length ? ' (checking signatures)' : ''}\n`);
});
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  });
}
