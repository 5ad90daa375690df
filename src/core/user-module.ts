import { existsSync } from 'node:fs';
import { register } from 'node:module';
import { pathToFileURL } from 'node:url';
import { CqpError, messageOf } from './errors.js';
import { importModule } from './import-module.js';

let hooksRegistered = false;

/** Imports a user module (JS, or TS transpiled on load, relative `.ts` imports included). */
export async function importUserModule(file: string, option: string): Promise<Record<string, unknown>> {
  if (!existsSync(file)) throw new CqpError('CONFIG', `${option} ${file}: no such file`);
  if (/\.m?ts$/.test(file) && !hooksRegistered) {
    register('./ts-hooks.js', import.meta.url);
    hooksRegistered = true;
  }
  try {
    return await importModule(pathToFileURL(file).href);
  } catch (error) {
    throw new CqpError('CONFIG', `${option} ${file}: cannot load it: ${messageOf(error)}`);
  }
}
