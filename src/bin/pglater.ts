#!/usr/bin/env node
// The `pglater` command: `sidekick later` under pgsidekick's name.
import { main } from '../cli.js';

void main(['later', ...process.argv.slice(2)]);
