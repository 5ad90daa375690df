#!/usr/bin/env node
'use strict';
require('./load-bundle.js').loadBundle().main(['source', ...process.argv.slice(2)]);
