import { describe, expect, it } from 'vitest';
import { RunOutput } from '../../src/supervisor/run-output.js';

function output(positioned = true, warnings: string[] = []): RunOutput {
  return new RunOutput({ stage: 's', argv: ['prog', '-x'], positioned, onError: 'skip', deadLetter: undefined, warn: (l) => warnings.push(l), badLine: () => {} });
}

function rewrite(o: RunOutput, lines: string[]): { text: string; error: string | undefined } {
  const { bytes, error } = o.rewrite(Buffer.from(lines.map((l) => `${l}\n`).join('')));
  return { text: bytes.toString('utf8'), error: error?.message };
}

describe('RunOutput', () => {
  it.each([
    ['the stamp as the last key', '{"a":1,"@cqp":"f:7"}', '{"a":1,"@cqp":"f:7.0"}'],
    ['the stamp as the first key', '{"@cqp":"f:7","a":1}', '{"a":1,"@cqp":"f:7.0"}'],
    ['the stamp between other keys, spaced', '{ "a": [1,{"b":"}"}] , "@cqp" : "f:7" , "c": "x,y" }', '{ "a": [1,{"b":"}"}] , "c": "x,y","@cqp":"f:7.0"}'],
    ['the stamp alone', '{"@cqp":"f:7"}', '{"@cqp":"f:7.0"}'],
    ['the stamp alone with an escaped key', '{"\\u0040cqp":"f:7","a":"\\"@cqp\\":\\"x\\""}', '{"a":"\\"@cqp\\":\\"x\\"","@cqp":"f:7.0"}'],
    ['a number text kept as written', '{"n":9007199254740993,"@cqp":"f:7","z":1e400}', '{"n":9007199254740993,"z":1e400,"@cqp":"f:7.0"}'],
    ['a CRLF line', '{"a":1,"@cqp":"f:7"}\r', '{"a":1,"@cqp":"f:7.0"}'],
  ])('restamps %s, keeping every other byte', (_name, line, expected) => {
    expect(rewrite(output(), [line])).toEqual({ text: `${expected}\n`, error: undefined });
  });

  it('gives consecutive outputs of one input sub-positions by output order, across chunks', () => {
    const o = output();
    expect(rewrite(o, ['{"k":0,"@cqp":"f:7.1"}', '{"@cqp":"f:7.1","k":1}']).text).toBe('{"k":0,"@cqp":"f:7.1.0"}\n{"k":1,"@cqp":"f:7.1.1"}\n');
    expect(rewrite(o, ['{"k":2,"@cqp":"f:7.1"}', '', '{"k":0,"@cqp":"f:9"}']).text).toBe('{"k":2,"@cqp":"f:7.1.2"}\n{"k":0,"@cqp":"f:9.0"}\n');
  });

  it('stops at a line that goes back to an earlier input, forwarding the lines before it', () => {
    const r = rewrite(output(), ['{"@cqp":"f:7"}', '{"@cqp":"f:9"}', '{"@cqp":"f:7"}']);
    expect(r.text).toBe('{"@cqp":"f:7.0"}\n{"@cqp":"f:9.0"}\n');
    expect(r.error).toMatch(/^stage s \(run: prog -x\) wrote line 3 for input f:7 after events of a later input \(f:9\)/);
  });

  it('stops at a line without a stamp when the input has positions, and passes it when it has none', () => {
    const r = rewrite(output(), ['{"@cqp":"f:7"}', '{"a":{"@cqp":"f:8"}}']);
    expect(r.text).toBe('{"@cqp":"f:7.0"}\n');
    expect(r.error).toMatch(/^stage s \(run: prog -x\) wrote line 2 without its "@cqp" key.*keep the "@cqp" key/);
    expect(rewrite(output(false), ['{"a":1}', '{"b":2}'])).toEqual({ text: '{"a":1}\n{"b":2}\n', error: undefined });
  });

  it.each([['debug text'], ['[1,2]'], ["{'a': 1, '@cqp': 'f:7'}"], ['{"a":1,"@cqp":"f:7"']])('skips %s under onError: skip, naming the stage and line', (line) => {
    const warnings: string[] = [];
    const r = rewrite(output(true, warnings), ['{"@cqp":"f:7"}', line, '{"@cqp":"f:8"}']);
    expect(r).toEqual({ text: '{"@cqp":"f:7.0"}\n{"@cqp":"f:8.0"}\n', error: undefined });
    expect(warnings).toEqual(['cqp: skipped stage s output:2: not a JSON object']);
  });
});
