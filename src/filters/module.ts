import { resolve } from 'node:path';
import * as z from 'zod';
import { defineFilter, type FilterResult, type JsonObject } from '../core/component.js';
import { CqpError } from '../core/errors.js';
import { importUserModule } from '../core/user-module.js';

type UserFunction = (event: JsonObject) => FilterResult | Promise<FilterResult>;

/** Loads the module and its default export, the function each event goes through. */
async function loadFunction(file: string, cwd: string): Promise<UserFunction> {
  const mod = await importUserModule(resolve(cwd, file), '--file');
  const fn = mod.default;
  if (typeof fn !== 'function') {
    throw new CqpError('CONFIG', `--file ${file}: its default export is ${typeof fn}; export a function (event) => event | event[] | null`);
  }
  return fn as UserFunction;
}

export default defineFilter({
  name: 'module',
  summary: 'run each event through the default export of a JS or TS module',
  description:
    'The module\'s default export is (event) => event | event[] | null, sync or async: an object is one ' +
    'event, an array several, null drops the event. For upcasters and any custom logic. A function that ' +
    'throws for one event follows --on-error. TypeScript modules are transpiled when loaded.',
  options: z.object({
    file: z.string().min(1).describe('the module file (.js, .mjs, .ts)'),
  }),
  positional: 'file',
  examples: [{ file: 'upcast.mjs' }],
  reads: { file: {} },
  checks: { file: (file, _options, ctx) => loadFunction(file, ctx.cwd) },
  async create({ file }, ctx) {
    return { process: await loadFunction(file, ctx.cwd) };
  },
});
