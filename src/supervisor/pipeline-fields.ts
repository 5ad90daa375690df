/**
 * The fields of a pipeline file, as zod schemas: `cqp run` validates files with them (config.ts), and
 * `cqp schema pipeline` builds its JSON Schema from them and from each component's own options.
 */
import * as z from 'zod';
import { FILE_RUNTIME_OPTIONS, type RuntimeFileValue, type RuntimeOptionSpec } from '../core/runtime-options.js';

const FILE_VALUE: Record<RuntimeFileValue, (spec: RuntimeOptionSpec) => z.ZodType> = {
  choice: (spec) => z.enum(spec.choices ?? []),
  path: () => z.string().min(1),
  count: () => z.number().int().positive(),
};

/** The runtime options a pipeline file may give beside a component's own (see runtime-options.ts). */
export const runtimeShape: Record<string, z.ZodType> = Object.fromEntries(
  FILE_RUNTIME_OPTIONS.map((spec) => [spec.key, FILE_VALUE[spec.file](spec).optional().describe(spec.description)]),
);
export const RUNTIME_KEYS = FILE_RUNTIME_OPTIONS.map((spec) => spec.key);
/** The runtime options that a `run:` program's stage takes too. */
export const PROGRAM_RUNTIME_OPTIONS = FILE_RUNTIME_OPTIONS.filter((spec) => spec.programs);

export const stageName = z.string().min(1).describe('the stage\'s name, unique in the pipeline (a reload matches stages by it)');
export const stageRun = z
  .union([z.string().min(1), z.array(z.string()).min(1)])
  .describe('a program that reads and writes NDJSON: its argv, or one string split as a shell would');

export const stageSchema = z.strictObject({
  name: stageName,
  filter: z.string().min(1).optional(),
  with: z.record(z.string(), z.unknown()).optional(),
  run: stageRun.optional(),
  ...runtimeShape,
});

export const pipelineName = z.string().min(1).optional().describe('the pipeline\'s name, shown in status lines');
export const componentName = z.string().min(1).describe('the component\'s name, unique in the pipeline (a reload matches components by it)');
export const sinkWhere = z.string().min(1).optional().describe('a JavaScript expression over the event `e`: the sink gets only the events for which it is truthy');

export const pipelineSchema = z.strictObject({
  name: pipelineName,
  source: z.looseObject({ type: z.string().min(1), name: componentName.optional() }),
  stages: z.array(z.unknown()).optional(),
  sinks: z.array(z.looseObject({ name: componentName, type: z.string().min(1), where: sinkWhere })).min(1),
});
