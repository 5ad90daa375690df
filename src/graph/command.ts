import { reportError } from '../core/errors.js';
import { openPipeline } from '../supervisor/config.js';
import { renderDot } from './dot.js';
import { renderMermaid } from './mermaid.js';
import { pipelineGraph } from './model.js';

export const GRAPH_FORMATS = ['dot', 'mermaid'] as const;
export type GraphFormat = (typeof GRAPH_FORMATS)[number];

/** `cqp graph FILE`: 0 with the drawing on stdout, or 2 with the file's problems as `cqp run` reports them. */
export async function graphCommand(file: string, format: GraphFormat): Promise<number> {
  try {
    const graph = pipelineGraph(await openPipeline(file));
    process.stdout.write(format === 'dot' ? renderDot(graph) : renderMermaid(graph));
    return 0;
  } catch (error) {
    return reportError(error);
  }
}
