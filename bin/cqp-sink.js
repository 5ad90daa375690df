#!/usr/bin/env node
import { main } from '../dist/cli.js';

await main(['sink', ...process.argv.slice(2)]);
