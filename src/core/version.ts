import { readFileSync } from 'node:fs';

/** The version the bins' bundles carry: build/bundle.mjs writes package.json's in its place. */
declare const CQP_BUNDLED_VERSION: string | undefined;

/**
 * cqp's version. The bundles the bins run carry it (read from package.json as they were built, so that
 * a start reads no file for it); elsewhere (src/, dist/) it is read from package.json when asked: two
 * folders up from this file, from src/core/ and dist/core/ alike. So it is right wherever the package
 * is installed (npx, a global install, a clone).
 */
export function packageVersion(): string {
  if (typeof CQP_BUNDLED_VERSION === 'string') return CQP_BUNDLED_VERSION;
  const manifest = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: unknown };
  return String(manifest.version);
}
