import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { cqp } from '../helpers/cli.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SHIPPED = readdirSync(join(ROOT, 'pipelines'))
  .filter((f) => f.endsWith('.yaml') && !f.endsWith('.test.yaml'))
  .map((f) => `pipelines/${f}`);

// graphviz is a Debian package (graphviz); where it is missing, the DOT is checked by the parser below only.
const GRAPHVIZ = spawnSync('dot', ['-V']).status === 0;

interface Drawing {
  /** Node id → its label, unescaped. */
  nodes: Map<string, string>;
  edges: Array<{ from: string; to: string; label: string | undefined; dashed: boolean }>;
}

/** Reads a DOT quoted string starting at `text[at]`: its value, unescaped, and where it ends. */
function dotString(text: string, at: number): { value: string; end: number } {
  expect(text[at]).toBe('"');
  let value = '';
  for (let i = at + 1; i < text.length; i++) {
    const c = text[i] as string;
    if (c === '"') return { value, end: i + 1 };
    if (c === '\\') {
      const next = text[++i] as string;
      value += next === 'n' ? '\n' : next;
    } else {
      expect(c, 'a raw line break in a DOT string').not.toBe('\n');
      value += c;
    }
  }
  throw new Error(`unclosed DOT string at ${at}`);
}

/** Parses `cqp graph`'s DOT line by line: every line is a header, an attribute, a node or an edge, and every edge's ends are declared nodes. */
function parseDot(text: string): Drawing {
  const lines = text.trimEnd().split('\n');
  expect(lines[0]).toMatch(/^digraph "/);
  expect(dotString(lines[0] as string, 8).end).toBe((lines[0] as string).length - 2);
  expect(lines.at(-1)).toBe('}');
  const drawing: Drawing = { nodes: new Map(), edges: [] };
  for (const line of lines.slice(1, -1)) {
    const statement = /^ {2}(n\d+)(?: -> (n\d+))?(?: \[(.*)\])?;$/.exec(line);
    if (statement === null) {
      expect(line).toMatch(/^ {2}(rankdir=LR|label="[^\n]*"|labelloc=t|node \[.*\]|edge \[.*\]);$/);
      continue;
    }
    const [, from, to, attrs = ''] = statement as unknown as [string, string, string | undefined, string | undefined];
    let label: string | undefined;
    let rest = attrs;
    const at = rest.indexOf('label="');
    if (at >= 0) {
      const s = dotString(rest, at + 6);
      label = s.value;
      rest = rest.slice(0, at) + rest.slice(s.end);
    }
    expect(rest, line).not.toMatch(/"/);
    if (to === undefined) {
      expect(drawing.nodes.has(from), `node ${from} declared twice`).toBe(false);
      drawing.nodes.set(from, label ?? '');
    } else drawing.edges.push({ from, to, label, dashed: /style=dashed/.test(rest) });
  }
  for (const e of drawing.edges) expect([drawing.nodes.has(e.from), drawing.nodes.has(e.to)], `${e.from} -> ${e.to}`).toEqual([true, true]);
  return drawing;
}

const ENTITIES: Array<[RegExp, string]> = [[/<br>/g, '\n'], [/#quot;/g, '"'], [/#amp;/g, '&'], [/#lt;/g, '<'], [/#gt;/g, '>'], [/#124;/g, '|'], [/#96;/g, '`'], [/#35;/g, '#']];

/** A Mermaid quoted label's text: nothing in it that Mermaid reads as syntax, then its entity codes decoded. */
function mermaidLabel(label: string): string {
  expect(label.replace(/<br>/g, ''), label).not.toMatch(/["<>|`]|#(?!(quot|amp|lt|gt|124|96|35);)/);
  return ENTITIES.reduce((text, [pattern, c]) => text.replace(pattern, c), label);
}

/** Parses `cqp graph --format mermaid`: a flowchart whose node ids are unique and whose edges join declared nodes. */
function parseMermaid(text: string): Drawing {
  const lines = text.trimEnd().split('\n');
  expect(lines[0]).toBe('flowchart LR');
  const drawing: Drawing = { nodes: new Map(), edges: [] };
  for (const line of lines.slice(1)) {
    const node = /^ {2}(n\d+)(\(|\[\(|\[)"([^"]*)"(\)|\)\]|\])$/.exec(line);
    const edge = /^ {2}(n\d+) (-->|-\.->)(?:\|"([^"]*)"\|)? (n\d+)$/.exec(line);
    if (node) {
      const [, id, open, label, close] = node as unknown as [string, string, string, string, string];
      expect({ '(': ')', '[(': ')]', '[': ']' }[open], line).toBe(close);
      expect(drawing.nodes.has(id), `node ${id} declared twice`).toBe(false);
      drawing.nodes.set(id, mermaidLabel(label));
    } else if (edge) {
      const [, from, arrow, label, to] = edge as unknown as [string, string, string, string | undefined, string];
      drawing.edges.push({ from, to, label: label === undefined ? undefined : mermaidLabel(label), dashed: arrow === '-.->' });
    } else throw new Error(`not a node or an edge: ${line}`);
  }
  for (const e of drawing.edges) expect([drawing.nodes.has(e.from), drawing.nodes.has(e.to)], `${e.from} --> ${e.to}`).toEqual([true, true]);
  return drawing;
}

/** Both drawings of a pipeline file, checked: parsed, and the DOT rendered by graphviz where it is installed. */
function drawBoth(file: string, cwd = ROOT): { dot: Drawing; mermaid: Drawing } {
  const dot = cqp(['graph', file], { cwd });
  expect(dot.status, dot.stderr).toBe(0);
  if (GRAPHVIZ) {
    const svg = spawnSync('dot', ['-Tsvg'], { input: dot.stdout, encoding: 'utf8' });
    expect(svg.stderr).toBe('');
    expect(svg.status).toBe(0);
    expect(svg.stdout).toMatch(/<svg/);
  }
  const mermaid = cqp(['graph', file, '--format', 'mermaid'], { cwd });
  expect(mermaid.status, mermaid.stderr).toBe(0);
  const drawings = { dot: parseDot(dot.stdout), mermaid: parseMermaid(mermaid.stdout) };
  // The two formats draw the same graph.
  expect(drawings.mermaid).toEqual(drawings.dot);
  return drawings;
}

/** The edges as `FROM -> TO [label] (dashed)` lines, by node label, for readable expectations. */
function edgesOf(d: Drawing): string[] {
  const name = (id: string): string => (d.nodes.get(id) ?? '').split('\n')[0] as string;
  return d.edges.map((e) => `${name(e.from)} ${e.dashed ? '-.->' : '-->'} ${name(e.to)}${e.label === undefined ? '' : ` [${e.label}]`}`);
}

describe(`cqp graph, every shipped pipeline in both formats (${GRAPHVIZ ? 'DOT rendered by graphviz' : 'graphviz is not installed: DOT parsed only'})`, () => {
  it.each(SHIPPED)('%s', (file) => {
    const { dot } = drawBoth(file);
    expect(dot.nodes.size).toBeGreaterThanOrEqual(2);
  });

  it('draws the views following the log as a dashed edge from the log sink', () => {
    expect(edgesOf(drawBoth('pipelines/ice-creams.yaml').dot)).toEqual([
      'source --> validate',
      'validate --> enrich',
      'enrich --> log',
      'log -.-> views [follows the log]',
    ]);
  });

  it("puts a sink's where: on its edge, and names what each component is", () => {
    const { dot } = drawBoth('pipelines/example.yaml');
    expect(edgesOf(dot)).toContain("score --> audit [where: e.header.eventType[0] === 'delete']");
    expect([...dot.nodes.values()]).toEqual(expect.arrayContaining(['source\nsource file', 'score\nrun: node score.mjs', 'audit\nsink file', 'views\nsink sqlite']));
  });
});

describe('cqp graph with names and expressions that hold quotes, brackets and line breaks', () => {
  const odd = {
    name: 'odd "pipe" [1]',
    source: { type: 'stdin', name: 'in"put\\' },
    stages: [
      { name: 'a [b] "c" {d} | e # f <g> & `h` #quot;', filter: 'where', with: { expr: "e.x === \"y\\\\z\" || e.t === '<#1>'" } },
      { name: 'multi\nline', filter: 'map', with: { expr: 'e.a = 1' } },
    ],
    sinks: [{ name: 'out "1" -->', type: 'stdout', where: "e.s === \"a|b\" && e.n[0] > 1\n  || e.k === '}'" }],
  };
  it('keeps every character in both formats, and graphviz renders it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cqp-graph-'));
    // JSON is YAML: the file holds exactly these strings.
    writeFileSync(join(dir, 'odd.yaml'), JSON.stringify(odd, null, 2));
    const { dot } = drawBoth('odd.yaml', dir);
    expect([...dot.nodes.values()]).toEqual([
      'in"put\\\nsource stdin',
      `${odd.stages[0]?.name}\nfilter where: ${odd.stages[0]?.with.expr}`,
      'multi\nline\nfilter map: e.a = 1',
      'out "1" -->\nsink stdout',
    ]);
    expect(dot.edges.at(-1)?.label).toBe(`where: ${odd.sinks[0]?.where}`);
  });
});

describe('cqp graph, used wrongly', () => {
  it('reports a bad file as cqp run does (exit 2, FILE:LINE: field: message) and prints no graph', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cqp-graph-bad-'));
    writeFileSync(join(dir, 'bad.yaml'), 'source: { type: demo, cont: 5 }\nsinks:\n  - { name: out, type: stdot }\n');
    const graph = cqp(['graph', 'bad.yaml'], { cwd: dir });
    expect(graph.status).toBe(2);
    expect(graph.stdout).toBe('');
    expect(graph.stderr).toMatch(/^cqp: bad\.yaml:1: source\.cont: unknown option "cont" for source demo — did you mean "count"\?/);
    expect(graph.stderr).toMatch(/bad\.yaml:3: sinks\[0\]\.type: unknown sink "stdot" — did you mean "stdout"\?/);
    const run = cqp(['run', 'bad.yaml'], { cwd: dir });
    expect({ status: run.status, stderr: run.stderr }).toEqual({ status: 2, stderr: graph.stderr });
  });
  it('names a file it cannot read (exit 2)', () => {
    const r = cqp(['graph', 'no-such-pipeline.yaml'], { cwd: tmpdir() });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/cannot read pipeline file no-such-pipeline\.yaml: ENOENT/);
  });
  it('refuses a format it does not draw (exit 2)', () => {
    const r = cqp(['graph', 'pipelines/ice-creams.yaml', '--format', 'svg'], { cwd: ROOT });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/Allowed choices are dot, mermaid/);
  });
  it('explains itself in --help and answers --version', () => {
    const help = cqp(['graph', '--help']);
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/--format <format>[\s\S]*dot \| mermaid|dot \(graphviz\) or mermaid/);
    expect(help.stdout).toMatch(/follow the command log/);
    expect(help.stdout).not.toMatch(/DESIGN|§/);
    const version = cqp(['graph', '--version']);
    expect(version).toMatchObject({ status: 0, stdout: `${(JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version}\n` });
  });
});
