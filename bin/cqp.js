#!/usr/bin/env node
'use strict';
require('./load-bundle.js').loadBundle().main([...process.argv.slice(2)]);
