import { componentMain } from '../component-cli.js';
import { filterFiles } from './files.js';

/**
 * Entry point of a filter's process (`cqp-filter …`, `cqp filter …`), bundled on its own (build/bundle.mjs):
 * it knows the filters alone, so it loads no code of the other kinds nor of cqp's commands (the supervisor, replay).
 */
export function main(argv: string[]): Promise<void> {
  return componentMain(argv, 'filter', filterFiles);
}
