import type { ComponentFiles } from '../core/component.js';

/** The filters, under their CLI words (see components.ts). */
export const filterFiles: ComponentFiles = {
  enrich: () => import('./enrich.js'),
  validate: () => import('./validate.js'),
  where: () => import('./where.js'),
  map: () => import('./map.js'),
  dedupe: () => import('./dedupe.js'),
  module: () => import('./module.js'),
};
