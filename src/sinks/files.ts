import type { ComponentFiles } from '../core/component.js';

/** The sinks, under their CLI words (see components.ts). */
export const sinkFiles: ComponentFiles = {
  stdout: () => import('./stdout.js'),
  file: () => import('./file.js'),
  log: () => import('./log.js'),
  sqlite: () => import('./sqlite.js'),
  postgres: () => import('./postgres.js'),
  kinesis: () => import('./kinesis.js'),
};
