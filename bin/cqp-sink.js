#!/usr/bin/env node
'use strict';
require('./load-bundle.js').loadBundle().main(['sink', ...process.argv.slice(2)]);
