import type { GraphNode, PipelineGraph } from './model.js';

// Mermaid's entity codes: inside a quoted label, a quote would end it, `<`, `>` and `&` are read as
// HTML, `|` ends an edge label and a backtick starts Markdown. `#` goes first: the codes begin with it.
const ENTITIES: Array<[RegExp, string]> = [
  [/#/g, '#35;'],
  [/"/g, '#quot;'],
  [/&/g, '#amp;'],
  [/</g, '#lt;'],
  [/>/g, '#gt;'],
  [/\|/g, '#124;'],
  [/`/g, '#96;'],
];

/** A Mermaid quoted label: characters Mermaid would read as syntax written as entity codes, line breaks as `<br>`. */
export function mermaidString(text: string): string {
  let escaped = text;
  for (const [pattern, code] of ENTITIES) escaped = escaped.replace(pattern, code);
  return `"${escaped.replace(/\r\n|\r|\n/g, '<br>')}"`;
}

function shaped(node: GraphNode): string {
  const label = mermaidString(node.lines.join('\n'));
  if (node.role === 'source') return `${node.id}(${label})`;
  return node.store ? `${node.id}[(${label})]` : `${node.id}[${label}]`;
}

/** The graph as a Mermaid flowchart (paste it into a ```mermaid block of a Markdown file). */
export function renderMermaid(graph: PipelineGraph): string {
  const out = ['flowchart LR'];
  for (const node of graph.nodes) out.push(`  ${shaped(node)}`);
  for (const edge of graph.edges) {
    const arrow = edge.follows ? '-.->' : '-->';
    out.push(`  ${edge.from} ${arrow}${edge.label === undefined ? '' : `|${mermaidString(edge.label)}|`} ${edge.to}`);
  }
  return `${out.join('\n')}\n`;
}
