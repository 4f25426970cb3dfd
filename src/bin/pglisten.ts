#!/usr/bin/env node
// The `pglisten` command: `sidekick listen` under pgsidekick's name.
import { main } from '../cli.js';

void main(['listen', ...process.argv.slice(2)]);
