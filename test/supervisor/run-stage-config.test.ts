import { describe, expect, it } from 'vitest';
import type { CqpError } from '../../src/core/errors.js';
import { parsePipeline } from '../../src/supervisor/config.js';
import { reloadDiff } from '../../src/supervisor/diff.js';

// A run: stage's onError and deadLetter apply to the lines it writes (the supervisor checks them).
const pipeline = (stage: string): string => `source: { type: demo, count: 10 }\nstages:\n  - ${stage}\nsinks:\n  - { name: out, type: stdout }\n`;

function refusal(text: string): string {
  try {
    parsePipeline(text, '/p/p.yaml');
  } catch (error) {
    expect((error as CqpError).code).toBe('CONFIG');
    return (error as Error).message;
  }
  throw new Error('expected the pipeline to be refused');
}

describe('run: stages in a pipeline file', () => {
  it('keep onError and deadLetter (resolved against the file) for the supervisor', () => {
    const plan = parsePipeline(pipeline('{ name: s, run: cat, onError: dead-letter, deadLetter: bad.ndjson }'), '/p/p.yaml');
    expect(plan.stages[0]?.runtime).toEqual({ onError: 'dead-letter', deadLetter: '/p/bad.ndjson' });
    expect(plan.stages[0]?.command).toEqual({ file: 'cat', args: [] });
  });

  it('refuse dead-letter without a file, and maxLineBytes, naming the line and field', () => {
    expect(refusal(pipeline('{ name: s, run: cat, onError: dead-letter }'))).toMatch(/p\.yaml:3: stages\[0\]\.onError: onError: dead-letter needs deadLetter: FILE/);
    expect(refusal(pipeline('{ name: s, run: cat, maxLineBytes: 100 }'))).toMatch(/p\.yaml:3: stages\[0\]\.maxLineBytes: .*not to run: programs/);
  });

  it('count a changed onError as a changed stage on reload', () => {
    const before = parsePipeline(pipeline('{ name: s, run: cat }'), '/p/p.yaml');
    const after = parsePipeline(pipeline('{ name: s, run: cat, onError: skip }'), '/p/p.yaml');
    expect(reloadDiff(before, after).changed).toEqual(['s']);
  });
});
