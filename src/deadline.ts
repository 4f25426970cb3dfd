// settleBy lives in src/wait.ts with the other waits. This re-export stays until
// src/source/outbox.ts imports it from there.
export { settleBy, type Settled } from './wait.js';
