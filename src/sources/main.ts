import { componentMain } from '../component-cli.js';
import { sourceFiles } from './files.js';

/**
 * Entry point of a source's process (`cqp-source …`, `cqp source …`), bundled on its own (build/bundle.mjs):
 * it knows the sources alone, so it loads no code of the other kinds nor of cqp's commands (the supervisor, replay).
 */
export function main(argv: string[]): Promise<void> {
  return componentMain(argv, 'source', sourceFiles);
}
