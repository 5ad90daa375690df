import { accessSync, constants, statSync } from 'node:fs';
import { delimiter, join, resolve } from 'node:path';
import { CqpError } from '../core/errors.js';

function isExecutableFile(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/**
 * Checks that a `run:` stage's program can be started from `cwd` the way the supervisor starts it (a
 * name with a slash is a path from the pipeline's folder, any other name is looked up on the PATH), and
 * returns its path; throws CqpError CONFIG saying what is wrong.
 */
export function findProgram(file: string, cwd: string, env: NodeJS.ProcessEnv = process.env): string {
  if (file.includes('/')) {
    const path = resolve(cwd, file);
    let isFile: boolean;
    try {
      isFile = statSync(path).isFile();
    } catch {
      throw new CqpError('CONFIG', `${path}: no such file (paths are relative to the pipeline file's folder)`);
    }
    if (!isFile) throw new CqpError('CONFIG', `${path} is not a file`);
    if (!isExecutableFile(path)) throw new CqpError('CONFIG', `${path} is not executable (chmod +x ${file}, or run it through its interpreter: [sh, ${file}])`);
    return path;
  }
  for (const dir of (env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue;
    const path = join(resolve(cwd, dir), file);
    if (isExecutableFile(path)) return path;
  }
  throw new CqpError('CONFIG', `program "${file}" is not found on the PATH (install it, or give its path, e.g. ./${file})`);
}
