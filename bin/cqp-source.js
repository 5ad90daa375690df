#!/usr/bin/env node
import { loadBundle } from './load-bundle.js';

await loadBundle().main(['source', ...process.argv.slice(2)]);
