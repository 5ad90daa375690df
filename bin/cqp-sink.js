#!/usr/bin/env node
import { loadBundle } from './load-bundle.js';

await loadBundle().main(['sink', ...process.argv.slice(2)]);
