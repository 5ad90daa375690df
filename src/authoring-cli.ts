import { Option, type Command } from 'commander';
import type { GraphFormat } from './graph/command.js';
// The table of kinds only: zod and the schemas load when `cqp schema` runs.
import { FILE_KINDS, fileSchemaText } from './file-schemas/kinds.js';

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
      '\nA sink that follows the command log (it reads the log another sink of the pipeline writes, not the\n' +
        'stages\' output) hangs off that sink on a dashed edge.\n\nExamples:\n' +
        '  cqp graph pipelines/ice-creams.yaml | dot -Tsvg > ice-creams.svg\n  cqp graph pipelines/example.yaml --format mermaid\n',
    )
    .action(async (file: string, opts: { format: GraphFormat }) => {
      const { graphCommand } = await import('./graph/command.js');
      setExit(await graphCommand(file, opts.format));
    });
  const kinds = Object.entries(FILE_KINDS).map(([kind, { title }]) => `  ${kind.padEnd(10)} ${title}`);
  program
    .command('schema')
    .description('print the JSON Schema of a kind of file, made from the definitions cqp run validates it with, for editors to complete and check it')
    .argument('<kind>', `the kind of file: ${Object.keys(FILE_KINDS).join(', ')}`)
    .addHelpText(
      'after',
      `\nKinds:\n${kinds.join('\n')}\n\nFor editors that use the YAML language server (VS Code's YAML extension and others), name\n` +
        "the schema on the YAML file's first line (a path relative to that file, or a URL):\n" +
        '  cqp schema pipeline > pipeline.schema.json\n  # yaml-language-server: $schema=pipeline.schema.json\n',
    )
    .action(async (kind: string) => {
      process.stdout.write(await fileSchemaText(kind));
    });
}
