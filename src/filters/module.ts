import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { z } from 'zod';
import { defineFilter, type FilterResult, type JsonObject } from '../core/component.js';
import { CqpError, messageOf } from '../core/errors.js';

type UserFunction = (event: JsonObject) => FilterResult | Promise<FilterResult>;

/** Imports a user module; TypeScript is transpiled beside the source so its relative imports still work. */
export async function importUserModule(file: string, option: string): Promise<Record<string, unknown>> {
  if (!existsSync(file)) throw new CqpError('CONFIG', `${option} ${file}: no such file`);
  if (!/\.(m|c)?ts$/.test(file)) {
    try {
      return (await import(pathToFileURL(file).href)) as Record<string, unknown>;
    } catch (error) {
      throw new CqpError('CONFIG', `${option} ${file}: cannot load it: ${messageOf(error)}`);
    }
  }
  const ts = await import('typescript');
  const output = ts.transpileModule(readFileSync(file, 'utf8'), {
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
    fileName: file,
  }).outputText;
  const temp = join(dirname(file), `.${basename(file)}.${process.pid}.cqp.mjs`);
  writeFileSync(temp, output);
  try {
    return (await import(pathToFileURL(temp).href)) as Record<string, unknown>;
  } catch (error) {
    throw new CqpError('CONFIG', `${option} ${file}: cannot load it: ${messageOf(error)}`);
  } finally {
    rmSync(temp, { force: true });
  }
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
  async create({ file }, ctx) {
    const path = resolve(ctx.cwd, file);
    const mod = await importUserModule(path, '--file');
    const fn = mod.default;
    if (typeof fn !== 'function') {
      throw new CqpError('CONFIG', `--file ${file}: its default export is ${typeof fn}; export a function (event) => event | event[] | null`);
    }
    return { process: fn as UserFunction };
  },
});
