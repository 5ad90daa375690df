/**
 * The pipeline test file (`NAME.test.yaml`): the one zod schema that validates it, and that a JSON
 * Schema for editors is generated from.
 */
import * as z from 'zod';

const event = z.record(z.string(), z.unknown());

/** Exactly one of `keys` is given in `value`: a problem at the object otherwise. */
function exactlyOne(keys: readonly string[], what: string) {
  return (value: Record<string, unknown>, ctx: z.RefinementCtx): void => {
    const given = keys.filter((k) => value[k] !== undefined);
    if (given.length !== 1) ctx.addIssue({ code: 'custom', message: `${what} has exactly one of ${keys.join(', ')}${given.length > 1 ? ` (it has ${given.join(' and ')})` : ''}` });
  };
}

/** Events fed into the pipeline at one place. */
export const testInputSchema = z
  .strictObject({
    insert_at: z.string().min(1).describe('where the events go in: a stage name (its input), or `source` (the input of the first stage)'),
    events: z.array(event).min(1).optional().describe('the events, inline'),
    file: z.string().min(1).optional().describe('an NDJSON file of events, relative to the test file'),
  })
  .superRefine(exactlyOne(['events', 'file'], 'an input'));

/** One check on the events extracted: exactly one of its three kinds. */
export const testConditionSchema = z
  .strictObject({
    json_equals: event.optional().describe('every event extracted equals this object'),
    json_contains: event.optional().describe('every event extracted holds these fields with these values (objects compared field by field)'),
    expr: z.string().min(1).optional().describe('an expression over `e` (as in `where`) that is true for every event extracted'),
  })
  .superRefine(exactlyOne(['json_equals', 'json_contains', 'expr'], 'a condition'));

/** What comes out of one stage or sink. */
export const testOutputSchema = z.strictObject({
  extract_from: z.string().min(1).describe('a stage name (what it writes) or a sink name (what reaches it)'),
  count: z.number().int().min(0).optional().describe('how many events come out there'),
  conditions: z.array(testConditionSchema).optional().describe('checks that each event extracted passes'),
});

/** A query on a views sink's database and the rows it returns. */
export const testViewSchema = z.strictObject({
  sink: z.string().min(1).describe('a sink keeping SQLite views'),
  query: z.string().min(1).describe('SQL run on its database after the events, e.g. SELECT id, sold FROM ice_creams ORDER BY id'),
  rows: z.array(z.record(z.string(), z.unknown())).describe('the rows the query returns, in order'),
});

/** One test: its events and what it checks. */
export const pipelineTestSchema = z.strictObject({
  name: z.string().min(1).describe('what the test checks, printed with its result'),
  inputs: z.array(testInputSchema).min(1).describe('the events fed in'),
  outputs: z.array(testOutputSchema).optional().describe('what comes out of stages and sinks'),
  no_outputs_from: z.array(z.string().min(1)).optional().describe('stages or sinks nothing may come out of'),
  views: z.array(testViewSchema).optional().describe('queries on view sinks after the events'),
});

/** A whole test file (`NAME.test.yaml`): the one definition of the format, which a JSON Schema for editors can be generated from. */
export const testFileSchema = z.strictObject({
  pipeline: z.string().min(1).describe('the pipeline file under test, relative to this file'),
  tests: z.array(pipelineTestSchema).min(1).describe('the tests, each run on its own with fresh stages and temporary stores'),
});

export type TestFile = z.infer<typeof testFileSchema>;
export type PipelineTest = z.infer<typeof pipelineTestSchema>;
export type TestCondition = z.infer<typeof testConditionSchema>;
export type TestView = z.infer<typeof testViewSchema>;
