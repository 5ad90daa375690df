#!/usr/bin/env node
'use strict';
require('./load-bundle.js').run(['filter', ...process.argv.slice(2)]);
