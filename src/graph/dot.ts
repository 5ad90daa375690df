import type { GraphNode, PipelineGraph } from './model.js';

/** A DOT quoted string: backslashes and quotes escaped, line breaks as `\n` (graphviz's centred line break). */
export function dotString(text: string): string {
  return `"${text.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\r\n|\r|\n/g, '\\n')}"`;
}

function shape(node: GraphNode): string {
  if (node.role === 'source') return 'shape=box, style=rounded';
  return node.store ? 'shape=cylinder' : 'shape=box';
}

/** The graph in graphviz's DOT language (`cqp graph FILE | dot -Tsvg > pipeline.svg`). */
export function renderDot(graph: PipelineGraph): string {
  const out = [`digraph ${dotString(graph.name)} {`, '  rankdir=LR;', `  label=${dotString(graph.name)};`, '  labelloc=t;', '  node [fontname="Helvetica"];', '  edge [fontname="Helvetica", fontsize=10];'];
  for (const node of graph.nodes) out.push(`  ${node.id} [label=${dotString(node.lines.join('\n'))}, ${shape(node)}];`);
  for (const edge of graph.edges) {
    const attrs = [...(edge.label === undefined ? [] : [`label=${dotString(edge.label)}`]), ...(edge.follows ? ['style=dashed'] : [])];
    out.push(`  ${edge.from} -> ${edge.to}${attrs.length > 0 ? ` [${attrs.join(', ')}]` : ''};`);
  }
  out.push('}');
  return `${out.join('\n')}\n`;
}
