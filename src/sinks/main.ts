import { componentMain } from '../component-cli.js';
import { sinkFiles } from './files.js';

/**
 * Entry point of a sink's process (`cqp-sink …`, `cqp sink …`), bundled on its own (build/bundle.mjs):
 * it knows the sinks alone, so it loads no code of the other kinds nor of cqp's commands (the supervisor, replay).
 */
export function main(argv: string[]): Promise<void> {
  return componentMain(argv, 'sink', sinkFiles);
}
