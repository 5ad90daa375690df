/**
 * import() of a module named at run time (a user's module, by its file URL). The bins run cqp from a V8
 * code cache (bin/load-bundle.js), where on Node 20 an import() in code compiled after the cache was
 * read finds no loader; they lend theirs, and cqp uses it when it is there.
 */
export function importModule(url: string): Promise<Record<string, unknown>> {
  const lent = (globalThis as { cqpImportModule?: (url: string) => Promise<Record<string, unknown>> }).cqpImportModule;
  return lent ? lent(url) : (import(url) as Promise<Record<string, unknown>>);
}
