#!/usr/bin/env node
import { main } from '../dist/cli.js';

await main(['filter', ...process.argv.slice(2)]);
