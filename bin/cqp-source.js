#!/usr/bin/env node
import { main } from '../dist/bundle/cli.js';

await main(['source', ...process.argv.slice(2)]);
