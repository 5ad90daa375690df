#!/usr/bin/env node
'use strict';
require('./load-bundle.js').loadBundle().main(['filter', ...process.argv.slice(2)]);
