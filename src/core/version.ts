import { readFileSync } from 'node:fs';

/**
 * cqp's version, read from its package.json when asked: two folders up from this file, from src/core/
 * and dist/core/ alike, and from dist/bundle/, where the bins' bundle lives (see build/bundle.mjs). So
 * it is right wherever the package is installed (npx, a global install, a clone).
 */
export function packageVersion(): string {
  const manifest = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: unknown };
  return String(manifest.version);
}
