#!/usr/bin/env node
import { loadBundle } from './load-bundle.js';

await loadBundle().main(['filter', ...process.argv.slice(2)]);
