import { isMap, isScalar, isSeq, LineCounter, parseDocument } from 'yaml';
import type { Document, Node } from 'yaml';

/** Line counters of documents parsed by `parseYaml`, so `lineOf` can turn offsets into lines. */
const counters = new WeakMap<Document, LineCounter>();

/** A path into a YAML document, as zod reports it: map keys and sequence indices. */
export type YamlPath = ReadonlyArray<PropertyKey>;

/** Parses YAML text into a document that remembers its line numbers (for `lineOf`). */
export function parseYaml(text: string): Document {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false });
  counters.set(doc, lineCounter);
  return doc;
}

function keyText(key: unknown): string | undefined {
  if (isScalar(key)) return String(key.value);
  if (typeof key === 'string' || typeof key === 'number') return String(key);
  return undefined;
}

/**
 * The 1-based line of the node at `path` in a document from `parseYaml`: for a map key, the line of
 * the key; for a sequence item, the line where the item starts. When the path goes past what the file
 * holds (a missing field), the line of the deepest part that exists. Undefined when the document was
 * not parsed by `parseYaml` and no `lineCounter` is given.
 */
export function lineOf(doc: Document, path: YamlPath, lineCounter?: LineCounter): number | undefined {
  const lines = lineCounter ?? counters.get(doc);
  if (!lines) return undefined;
  let node: unknown = doc.contents;
  let offset = (doc.contents as Node | null)?.range?.[0];
  for (const segment of path) {
    if (isMap(node)) {
      const pair = node.items.find((p) => keyText(p.key) === String(segment));
      if (!pair) break;
      const start = (pair.key as Node | null)?.range?.[0];
      if (start !== undefined) offset = start;
      node = pair.value;
    } else if (isSeq(node)) {
      const item = node.items[Number(segment)] as Node | undefined;
      if (!item) break;
      if (item.range) offset = item.range[0];
      node = item;
    } else {
      break;
    }
  }
  return offset === undefined ? undefined : lines.linePos(offset).line;
}

/** Writes a zod-style path as the field name users see: `views[0].on.create`. */
export function formatYamlPath(path: YamlPath): string {
  let out = '';
  for (const segment of path) {
    if (typeof segment === 'number') out += `[${segment}]`;
    else {
      const s = String(segment);
      out += /^[A-Za-z_][\w-]*$/.test(s) ? (out ? `.${s}` : s) : `[${JSON.stringify(s)}]`;
    }
  }
  return out;
}
