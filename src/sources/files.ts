import type { ComponentFiles } from '../core/component.js';

/** The sources, under their CLI words (see components.ts). */
export const sourceFiles: ComponentFiles = {
  stdin: () => import('./stdin.js'),
  file: () => import('./file.js'),
  demo: () => import('./demo.js'),
  log: () => import('./log.js'),
  kinesis: () => import('./kinesis.js'),
};
