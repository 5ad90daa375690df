import type { FilterDefinition, SinkDefinition, SourceDefinition } from './core/component.js';
import dedupe from './filters/dedupe.js';
import enrich from './filters/enrich.js';
import map from './filters/map.js';
import module from './filters/module.js';
import validate from './filters/validate.js';
import where from './filters/where.js';
import fileSink from './sinks/file.js';
import kinesisSink from './sinks/kinesis.js';
import logSink from './sinks/log.js';
import sqlite from './sinks/sqlite.js';
import stdout from './sinks/stdout.js';
import demo from './sources/demo.js';
import fileSource from './sources/file.js';
import kinesisSource from './sources/kinesis.js';
import logSource from './sources/log.js';
import stdin from './sources/stdin.js';

/** The static registry: add a component by importing its file here. */
export const filters: readonly FilterDefinition[] = [enrich, validate, where, map, dedupe, module];
export const sources: readonly SourceDefinition[] = [stdin, fileSource, demo, logSource, kinesisSource];
export const sinks: readonly SinkDefinition[] = [stdout, fileSink, logSink, sqlite, kinesisSink];
