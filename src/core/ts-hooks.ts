import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

type NextLoad = (url: string, context: unknown) => Promise<{ format?: string; source?: unknown }>;

/** Module loader hook (registered by importUserModule): transpiles user `.ts`/`.mts` modules on load. */
export async function load(url: string, context: unknown, nextLoad: NextLoad): Promise<{ format?: string; source?: unknown; shortCircuit?: boolean }> {
  if (!/^file:.*\.m?ts$/.test(url)) return nextLoad(url, context);
  const ts = await import('typescript');
  const file = fileURLToPath(url);
  const output = ts.transpileModule(await readFile(file, 'utf8'), {
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, verbatimModuleSyntax: false },
    fileName: file,
  }).outputText;
  return { format: 'module', source: output, shortCircuit: true };
}
