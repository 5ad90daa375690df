#!/usr/bin/env node
'use strict';
require('./load-bundle.js').run(['source', ...process.argv.slice(2)]);
