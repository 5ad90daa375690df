#!/usr/bin/env node
import { main } from '../dist/bundle/cli.js';

await main(['sink', ...process.argv.slice(2)]);
