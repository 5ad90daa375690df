import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { LosslessNumber, MAX_NESTING, nestsDeeperThan, parseJson, stringifyEvent, stringifyJson } from '../../src/core/json.js';
import { seededRandom } from '../../src/core/random.js';

const SUITE = join(import.meta.dirname, '../fixtures/json-test-suite/test_parsing');
const files = readdirSync(SUITE).filter((f) => f.endsWith('.json'));

/** The exact decimal value of a JSON number text as m·10^x (BigInt), independent of the code under test. */
function decimal(text: string): { m: bigint; x: number } {
  const match = /^(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/.exec(text);
  if (!match) throw new Error(`not a number: ${text}`);
  const fraction = match[3] ?? '';
  const m = BigInt(`${match[1]}${match[2]}${fraction}`);
  return { m, x: Number(match[4] ?? 0) - fraction.length };
}

function sameValue(a: string, b: string): boolean {
  const p = decimal(a);
  const q = decimal(b);
  const x = Math.min(p.x, q.x);
  return p.m * 10n ** BigInt(p.x - x) === q.m * 10n ** BigInt(q.x - x);
}

describe('parseJson on the JSON test suite', () => {
  const text = (f: string): string => readFileSync(join(SUITE, f), 'latin1');

  it.each(files.filter((f) => f.startsWith('n_')))('%s is refused as JSON.parse refuses it', (f) => {
    expect(() => parseJson(text(f))).toThrow();
  });

  it.each(files.filter((f) => f.startsWith('y_')))('%s parses as JSON.parse does, and serialises back to the same value', (f) => {
    const t = readFileSync(join(SUITE, f), 'utf8');
    const value = parseJson(t);
    const plain: unknown = JSON.parse(t);
    // Equal to JSON.parse's value once each kept number is read as a double.
    expect(JSON.parse(stringifyJson(value) ?? 'null')).toEqual(plain);
    // Serialising and parsing again changes nothing.
    expect(stringifyJson(parseJson(stringifyJson(value) ?? ''))).toBe(stringifyJson(value));
  });

  it.each(files.filter((f) => f.startsWith('i_number')))('%s keeps its number text', (f) => {
    const t = readFileSync(join(SUITE, f), 'utf8').trim();
    const token = /-?\d[\d.eE+-]*/.exec(t)?.[0] as string;
    expect(stringifyJson(parseJson(t))).toContain(token);
  });
});

describe('numbers a double cannot carry are found, with no false negatives', () => {
  const random = seededRandom(7);
  const digits = (n: number): string => Array.from({ length: n }, () => String(Math.floor(random() * 10))).join('');
  const token = (): string => {
    const sign = random() < 0.3 ? '-' : '';
    const intDigits = 1 + Math.floor(random() * 22);
    let int = digits(intDigits).replace(/^0+(?=\d)/, '');
    if (random() < 0.2) int = '0';
    const frac = random() < 0.5 ? `.${digits(1 + Math.floor(random() * 20))}` : '';
    const exp = random() < 0.2 ? `${random() < 0.5 ? 'e' : 'E'}${['', '+', '-'][Math.floor(random() * 3)]}${Math.floor(random() * 420)}` : '';
    return `${sign}${int}${frac}${exp}`;
  };

  it('every number that comes back as a plain number has the value and sign of its text', () => {
    for (let i = 0; i < 20_000; i++) {
      const t = token();
      const sep = [':', ': ', ':\t'][i % 3] as string;
      const v = (parseJson(`{"a"${sep}${t},"b":[${t}]}`) as { a: unknown; b: unknown[] });
      for (const got of [v.a, v.b[0]]) {
        if (got instanceof LosslessNumber) {
          expect(got.text).toBe(t);
          continue;
        }
        expect(typeof got).toBe('number');
        const n = got as number;
        expect(Number.isFinite(n), t).toBe(true);
        expect(Object.is(n, -0), t).toBe(false);
        expect(sameValue(JSON.stringify(n), t), `${t} came back as ${n}`).toBe(true);
      }
    }
  });

  it('serialising writes each kept number as its text, and a computed NaN or Infinity as null', () => {
    const e = parseJson('{"a":{"b":[1,9007199254740993]},"c":-0,"d":1e400}');
    expect(stringifyEvent(e)).toBe('{"a":{"b":[1,9007199254740993]},"c":-0,"d":1e400}');
    expect(stringifyEvent({ x: 10n ** 30n })).toBe('{"x":1000000000000000000000000000000}');
    expect(stringifyEvent({ a: { b: [1, Number.NaN, -1 / 0] } })).toBe('{"a":{"b":[1,null,null]}}');
    expect(stringifyEvent({ a: null, b: 'null' })).toBe('{"a":null,"b":"null"}');
  });

  it('keeps "__proto__" an own property, as JSON.parse does', () => {
    const e = parseJson('{"__proto__":{"x":1},"n":12345678901234567890}') as Record<string, unknown>;
    expect(Object.getPrototypeOf(e)).toBe(Object.prototype);
    expect(Object.hasOwn(e, '__proto__')).toBe(true);
    expect(stringifyEvent(e)).toBe('{"__proto__":{"x":1},"n":12345678901234567890}');
  });
});

describe('nestsDeeperThan', () => {
  const nested = (d: number): string => `${'['.repeat(d)}${']'.repeat(d)}`;
  it.each([
    [nested(MAX_NESTING), false],
    [nested(MAX_NESTING + 1), true],
    [`{"a":${nested(MAX_NESTING - 1)}}`, false],
    [`{"a":${nested(MAX_NESTING)}}`, true],
    [`["${'['.repeat(3000)}"]`, false],
    [`["\\"${'['.repeat(3000)}"]`, false],
    [`["\\\\",${nested(MAX_NESTING)}]`, true],
    [`["\\\\\\"${'{'.repeat(3000)}"]`, false],
  ])('case %#', (text, deeper) => {
    expect(nestsDeeperThan(text)).toBe(deeper);
  });
});
