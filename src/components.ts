import type { FilterDefinition, SinkDefinition, SourceDefinition } from './core/component.js';
import dedupe from './filters/dedupe.js';
import enrich from './filters/enrich.js';
import map from './filters/map.js';
import module from './filters/module.js';
import validate from './filters/validate.js';
import where from './filters/where.js';
import demo from './sources/demo.js';
import stdin from './sources/stdin.js';
import fileSink from './sinks/file.js';
import stdout from './sinks/stdout.js';

/** The static registry: add a component by importing its file here. */
export const filters: readonly FilterDefinition[] = [enrich, validate, where, map, dedupe, module];
export const sources: readonly SourceDefinition[] = [stdin, demo];
export const sinks: readonly SinkDefinition[] = [stdout, fileSink];
