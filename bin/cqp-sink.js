#!/usr/bin/env node
'use strict';
require('./load-bundle.js').run(['sink', ...process.argv.slice(2)]);
