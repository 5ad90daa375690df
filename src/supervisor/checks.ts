/**
 * The checks `cqp lint` runs once a pipeline file validates: each component's own checks of the options
 * that name files or code, and the lookup of `run:` programs. Each problem is reported at its field.
 */
import type { ComponentDefinition } from '../core/component.js';
import { messageOf } from '../core/errors.js';
import { kebab } from '../core/options.js';
import type { YamlPath } from '../views/yaml-location.js';

import type { Problem } from '../core/yaml-problems.js';

export type { Problem };

/**
 * A check `cqp lint` runs after the file validates: a component's check of one option (it opens or
 * compiles what the option names, with the component's own code), or the lookup of a `run:` program.
 */
export interface Check {
  path: YamlPath;
  /** The option's flag, cut from the front of the message (the field already names it). */
  flag?: string;
  run: () => unknown;
}

/**
 * Queues the checks `def` declares for the options the file gives (`given`; `options`: all of them,
 * defaults filled in; `at`: where they are in the file).
 */
export function queueChecks(def: ComponentDefinition, options: Record<string, unknown>, given: readonly string[], at: YamlPath, dir: string, checks: Check[]): void {
  for (const [key, check] of Object.entries(def.checks ?? {})) {
    const value = options[key];
    if (!given.includes(key) || value === undefined || value === null || typeof check !== 'function') continue;
    checks.push({ path: [...at, key], flag: `--${kebab(key)}`, run: () => (check as (v: unknown, o: unknown, c: { cwd: string }) => unknown)(value, options, { cwd: dir }) });
  }
}

/** Runs the checks; each line of what one throws becomes a problem at its field. */
export async function runChecks(checks: Check[], problems: Problem[]): Promise<void> {
  for (const check of checks) {
    try {
      await check.run();
    } catch (error) {
      let message = messageOf(error);
      if (check.flag && message.startsWith(`${check.flag}: `)) message = message.slice(check.flag.length + 2);
      else if (check.flag && message.startsWith(`${check.flag} `)) message = message.slice(check.flag.length + 1);
      for (const line of message.split('\n')) if (line.trim() !== '') problems.push({ path: check.path, message: line });
    }
  }
}
