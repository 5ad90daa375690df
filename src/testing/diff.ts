/**
 * Comparing JSON values as a test does (objects compared key by key, whatever the order) and showing
 * how two of them differ: both printed the same way, one line per field, with a line diff between them.
 */

function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/** `value` with its object keys sorted at every depth, so that two equal values print the same. */
function sorted(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sorted);
  if (isObject(value)) return Object.fromEntries(Object.keys(value).sort().map((k) => [k, sorted(value[k])]));
  return typeof value === 'bigint' ? Number(value) : value;
}

/** The JSON text of `value` with sorted keys: `pretty` spreads it over lines, one field a line. */
export function canonical(value: unknown, pretty = false): string {
  return JSON.stringify(sorted(value), null, pretty ? 2 : undefined) ?? 'undefined';
}

/** True when the two values are equal as JSON (object keys in any order). */
export function jsonEquals(actual: unknown, expected: unknown): boolean {
  return canonical(actual) === canonical(expected);
}

/** True when `actual` holds every field of `expected` with an equal value (objects field by field; arrays item by item, same length). */
export function jsonContains(actual: unknown, expected: unknown): boolean {
  if (isObject(expected)) return isObject(actual) && Object.keys(expected).every((k) => k in actual && jsonContains(actual[k], expected[k]));
  if (Array.isArray(expected)) return Array.isArray(actual) && actual.length === expected.length && expected.every((e, i) => jsonContains(actual[i], e));
  return jsonEquals(actual, expected);
}

/** The part of `actual` that `expected` speaks of (its fields, at every depth), so that a diff shows only those. */
export function pruneTo(actual: unknown, expected: unknown): unknown {
  if (isObject(expected) && isObject(actual)) {
    return Object.fromEntries(Object.keys(expected).filter((k) => k in actual).map((k) => [k, pruneTo(actual[k], expected[k])]));
  }
  if (Array.isArray(expected) && Array.isArray(actual)) return actual.map((a, i) => (i < expected.length ? pruneTo(a, expected[i]) : a));
  return actual;
}

const MAX_CELLS = 4_000_000;

/** A line diff of `expected` and `actual`: `- ` lines only expected, `+ ` lines only actual, `  ` both. */
export function lineDiff(expected: string[], actual: string[]): string[] {
  const n = expected.length;
  const m = actual.length;
  if (n * m > MAX_CELLS) return [...expected.map((l) => `- ${l}`), ...actual.map((l) => `+ ${l}`)];
  // Longest common subsequence, from the end, so the walk below goes forwards.
  const lcs: number[][] = Array.from({ length: n + 1 }, () => new Array<number>(m + 1).fill(0));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      const row = lcs[i] as number[];
      row[j] = expected[i] === actual[j] ? (lcs[i + 1]?.[j + 1] ?? 0) + 1 : Math.max(lcs[i + 1]?.[j] ?? 0, row[j + 1] ?? 0);
    }
  }
  const out: string[] = [];
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && expected[i] === actual[j]) {
      out.push(`  ${expected[i++] as string}`);
      j++;
    } else if (i < n && (j === m || (lcs[i + 1]?.[j] ?? 0) >= (lcs[i]?.[j + 1] ?? 0))) {
      out.push(`- ${expected[i++] as string}`);
    } else {
      out.push(`+ ${actual[j++] as string}`);
    }
  }
  return out;
}

/** How `actual` differs from `expected`, both printed one field a line: the legend, then the diff. */
export function jsonDiff(expected: unknown, actual: unknown): string[] {
  return ['- expected', '+ actual', ...lineDiff(canonical(expected, true).split('\n'), canonical(actual, true).split('\n'))];
}

/** How two lists differ, one item a line (rows of a query, events). */
export function listDiff(expected: unknown[], actual: unknown[]): string[] {
  return ['- expected', '+ actual', ...lineDiff(expected.map((v) => canonical(v)), actual.map((v) => canonical(v)))];
}
