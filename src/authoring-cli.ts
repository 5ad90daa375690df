import { Option, type Command } from 'commander';
import type { GraphFormat } from './graph/command.js';
import { FILE_KINDS } from './file-schemas/kinds.js';

const GRAPH_FORMATS: readonly GraphFormat[] = ['dot', 'mermaid'];

/** `cqp graph` and `cqp schema`: commands for writing pipelines, which run nothing. `setExit` records a command's exit code. */
export function addAuthoringCommands(program: Command, setExit: (code: number) => void): void {
  program
    .command('graph')
    .description('draw a pipeline file: source → stages → sinks, with each sink\'s where: on its edge, and the sinks that follow the command log')
    .argument('<pipeline>', 'the pipeline YAML file (checked as cqp run checks it: exit 2 with FILE:LINE: field: message)')
    .addOption(new Option('--format <format>', 'dot (graphviz) or mermaid (a flowchart for Markdown)').choices(GRAPH_FORMATS).default('dot'))
    .addHelpText(
      'after',
      '\nA sink that follows the command log (it reads the log a log sink writes, not the stages\' output) hangs ' +
        'off that sink on a dashed edge.\n\nExamples:\n  cqp graph pipelines/ice-creams.yaml | dot -Tsvg > ice-creams.svg\n' +
        '  cqp graph pipelines/example.yaml --format mermaid\n',
    )
    .action(async (file: string, opts: { format: GraphFormat }) => {
      const { graphCommand } = await import('./graph/command.js');
      setExit(await graphCommand(file, opts.format));
    });
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
