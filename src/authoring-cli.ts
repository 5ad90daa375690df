import type { Command } from 'commander';
import { FILE_KINDS } from './file-schemas/kinds.js';

/** `cqp schema`: commands for writing pipelines, which run nothing. */
export function addAuthoringCommands(program: Command): void {
  const kinds = Object.entries(FILE_KINDS).map(([kind, { title }]) => `  ${kind.padEnd(10)} ${title}`);
  program
    .command('schema')
    .description('print the JSON Schema of a kind of file, for editors to complete and check it (the same checks cqp run makes of its fields)')
    .argument('<kind>', `the kind of file: ${Object.keys(FILE_KINDS).join(', ')}`)
    .addHelpText(
      'after',
      `\nKinds:\n${kinds.join('\n')}\n\nWith the YAML language server (VS Code's YAML extension and others), name the schema on the file's first line:\n` +
        '  cqp schema pipeline > pipeline.schema.json\n  # yaml-language-server: $schema=pipeline.schema.json\n',
    )
    .action(async (kind: string) => {
      const { fileSchemaText } = await import('./file-schemas/kinds.js');
      process.stdout.write(await fileSchemaText(kind));
    });
}
