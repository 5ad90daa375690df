#!/usr/bin/env node
import { main } from '../dist/cli.js';

await main(['source', ...process.argv.slice(2)]);
