// The dispatcher lives in src/dispatcher/ (lanes, batcher, circuit, retries; index.ts wires them).
// This re-export stays until every importer (src/source/*, src/outbox/ledger.ts, src/pipeline.ts,
// test/integration/*, bench/*) imports src/dispatcher/index.js.
export * from './dispatcher/index.js';
