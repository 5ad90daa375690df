#!/usr/bin/env node
'use strict';
require('./load-bundle.js').run(process.argv.slice(2));
