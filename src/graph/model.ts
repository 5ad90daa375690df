/**
 * What `cqp graph` draws, read off a validated pipeline plan: the source, the stages in order, the sinks,
 * the `where:` on the way into a sink, and the sinks that follow a command log (they read the log a sink
 * of the pipeline writes, not the stages' output). The renderers (dot.ts, mermaid.ts) only lay it out.
 */
import { findComponent } from '../core/registry.js';
import type { PipelinePlan, SinkPlan, StagePlan } from '../supervisor/plan.js';

export type NodeRole = 'source' | 'stage' | 'sink';

export interface GraphNode {
  /** An id safe in every format (n0, n1, …): names may hold any character, labels carry them. */
  id: string;
  role: NodeRole;
  /** Lines of the label: the component's name, then what it is. */
  lines: string[];
  /** It keeps a file or database (a log, views): drawn as a store. */
  store: boolean;
}

export interface GraphEdge {
  from: string;
  to: string;
  /** The `where:` expression of the sink it leads to, or that the sink follows the log. */
  label: string | undefined;
  /** The sink reads a log itself (dashed): the events do not come through the stages. */
  follows: boolean;
}

export interface PipelineGraph {
  name: string;
  nodes: GraphNode[];
  edges: GraphEdge[];
}

/** What a stage is: its filter and the option it takes as its argument (`where EXPR`), or its program's argv. */
function stageLines(stage: StagePlan): string[] {
  if (stage.filter === undefined) return [stage.name, `run: ${[stage.command.file, ...stage.command.args].join(' ')}`];
  const positional = findComponent('filter', stage.filter)?.positional;
  const argument = positional === undefined ? undefined : stage.options[positional];
  return [stage.name, typeof argument === 'string' ? `filter ${stage.filter}: ${argument}` : `filter ${stage.filter}`];
}

/** The graph of a validated pipeline (its components loaded, as openPipeline leaves them). */
export function pipelineGraph(plan: PipelinePlan): PipelineGraph {
  const nodes: GraphNode[] = [];
  const edges: GraphEdge[] = [];
  const add = (role: NodeRole, lines: string[], store: boolean): string => {
    const id = `n${nodes.length}`;
    nodes.push({ id, role, lines, store });
    return id;
  };
  let last = add('source', [plan.source.name, `source ${plan.source.type}`], false);
  for (const stage of plan.stages) {
    const id = add('stage', stageLines(stage), false);
    edges.push({ from: last, to: id, label: undefined, follows: false });
    last = id;
  }
  const sinkIds = new Map<SinkPlan, string>();
  for (const sink of plan.sinks) sinkIds.set(sink, add('sink', [sink.name, `sink ${sink.type}`], sink.store !== undefined));
  for (const sink of plan.sinks) {
    const id = sinkIds.get(sink) as string;
    if (sink.logInput === undefined) {
      edges.push({ from: last, to: id, label: sink.where === undefined ? undefined : `where: ${sink.where}`, follows: false });
      continue;
    }
    // `cqp run` has a sink follow a log only beside the sink of the same pipeline that writes it.
    const path = sink.logInput.path;
    const writer = plan.sinks.find((s) => s.logInput === undefined && s.store === path);
    if (writer === undefined) throw new Error(`sink ${sink.name} follows ${path}, which no sink of the pipeline writes`);
    edges.push({ from: sinkIds.get(writer) as string, to: id, label: 'follows the log', follows: true });
  }
  return { name: plan.name, nodes, edges };
}
