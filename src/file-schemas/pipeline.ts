/**
 * The pipeline file as one strict zod schema, for `cqp schema pipeline`: the file's own fields
 * (pipeline-fields.ts, which `cqp run` validates with) and, for each built-in component, its options
 * schema, so that an editor completes and checks `with:` and a sink's options as `cqp run` would.
 */
import * as z from 'zod';
import type { ComponentDefinition } from '../core/component.js';
import { optionSpecs } from '../core/options.js';
import { componentNames, loadNamedComponents, registry } from '../core/registry.js';
import { PROGRAM_RUNTIME_OPTIONS, componentName, pipelineName, runtimeShape, sinkWhere, stageName, stageRun } from '../supervisor/pipeline-fields.js';

// `${VAR}` expands before validation, and a number option also takes a numeric string: `count: "${COUNT:-20000}"`.
const VARIABLE = /\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}/;
const NUMERIC = /^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$/;
const numberText = z.string().regex(new RegExp(`${NUMERIC.source}|${VARIABLE.source}`)).describe('a number, or ${VAR} standing for one');
const variableText = z.string().regex(VARIABLE).describe('${VAR} standing for one of the values');

/** A component's options, as a pipeline file gives them: every option of its schema and the runtime options. */
function optionShape(def: ComponentDefinition, runtime: Record<string, z.ZodType>): Record<string, z.ZodType> {
  const shape: Record<string, z.ZodType> = {};
  for (const spec of optionSpecs(def.options)) {
    const field = def.options.shape[spec.key] as z.ZodType;
    const alternative = spec.type === 'number' ? numberText : spec.type === 'enum' ? variableText : undefined;
    if (alternative === undefined) shape[spec.key] = field;
    else {
      const either = z.union([field, alternative]).describe(spec.description);
      shape[spec.key] = spec.required ? either : either.optional();
    }
  }
  return { ...shape, ...runtime };
}

const described = (def: ComponentDefinition): string => `${def.kind} ${def.name}: ${def.summary}`;

/** The zod schema of a whole pipeline file, every component's options included (loads every built-in component). */
export async function pipelineFileSchema(): Promise<z.ZodType> {
  await Promise.all((['source', 'filter', 'sink'] as const).map((kind) => loadNamedComponents(kind, componentNames(kind))));
  const ordered = (kind: 'source' | 'filter' | 'sink'): ComponentDefinition[] =>
    componentNames(kind).flatMap((name) => registry[kind].filter((d) => d.name === name));
  const sources = ordered('source').map((def) =>
    z.strictObject({ type: z.literal(def.name), name: componentName.optional(), ...optionShape(def, runtimeShape) }).describe(described(def)),
  );
  const filters = ordered('filter').map((def) => {
    const needsWith = optionSpecs(def.options).some((spec) => spec.required);
    const options = z.strictObject(optionShape(def, runtimeShape));
    return z.strictObject({ name: stageName, filter: z.literal(def.name), with: needsWith ? options : options.optional(), ...runtimeShape }).describe(described(def));
  });
  const programRuntime = Object.fromEntries(PROGRAM_RUNTIME_OPTIONS.map((spec) => [spec.key, runtimeShape[spec.key] as z.ZodType]));
  const program = z.strictObject({ name: stageName, run: stageRun, ...programRuntime }).describe('a run: program');
  const sinks = ordered('sink').map((def) =>
    z.strictObject({ name: componentName, type: z.literal(def.name), where: sinkWhere, ...optionShape(def, runtimeShape) }).describe(described(def)),
  );
  return z
    .strictObject({
      name: pipelineName,
      source: z.union(sources).describe('where the events come from: { type, …its options }'),
      stages: z.array(z.union([...filters, program])).optional().describe('filters the events go through, in order: { name, filter, with } or { name, run }'),
      sinks: z.array(z.union(sinks)).min(1).describe('where the events go, each { name, type, where?, …its options }'),
    })
    .describe('a cqp pipeline file (cqp run FILE)');
}
