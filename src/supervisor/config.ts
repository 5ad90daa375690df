/**
 * Pipeline files (`cqp run pipeline.yaml`): YAML → a validated, fully resolved plan in which
 * every component is the exact command line the supervisor will spawn. Validation collects every
 * problem it finds and reports each as `FILE:LINE: field: message`, with a did-you-mean when a name is
 * close to a valid one.
 */
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import * as z from 'zod';
import { isExactlyOnce, type ComponentDefinition, type ComponentKind, type SinkDefinition, type SourceDefinition } from '../core/component.js';
import type { Document } from 'yaml';
import { CqpError, messageOf } from '../core/errors.js';
import { compileExpression } from '../core/expression.js';
import { kebab, optionSpecs, optionsToArgv, parseOptions } from '../core/options.js';
import { componentNames, findComponent, loadNamedComponents } from '../core/registry.js';
import { suggestion } from '../core/suggest.js';
import { lineOf, parseYaml, type YamlPath } from '../views/yaml-location.js';
import { problemsError, zodProblems } from '../core/yaml-problems.js';
import { queueChecks, runChecks, type Check, type Problem } from './checks.js';
import { findProgram } from './program.js';
import { cliCommand, type Command, type PipelinePlan, type SinkPlan, type SourcePlan, type StagePlan } from './plan.js';
import { expandAll, splitCommandLine } from './pipeline-text.js';
import { FILE_RUNTIME_OPTIONS, runtimeArgv, type RuntimeFileValue, type RuntimeOptionSpec, type RuntimeSettings } from '../core/runtime-options.js';
import { PROGRAM_RUNTIME_OPTIONS, RUNTIME_KEYS, pipelineSchema, runtimeShape, stageSchema } from './pipeline-fields.js';

/**
 * Option keys whose values are file paths, resolved against the pipeline file's folder. One list for
 * every component; a component may also mark an option with `.meta({ path: true })`, or `.meta({ path: false })`
 * for one that is not a path.
 */
export const PATH_OPTION_KEYS: ReadonlySet<string> = new Set(['path', 'db', 'views', 'schema', 'file', 'deadLetter', 'checkpoint', 'handler']);

/** True when option `key` of `def` holds a file path. */
export function isPathOption(def: ComponentDefinition | undefined, key: string): boolean {
  const field = def?.options.shape[key] as z.ZodType | undefined;
  const meta = field ? (z.globalRegistry.get(field) as { path?: unknown } | undefined) : undefined;
  // `.meta({ path: false })`: an option named like a path that is not one (a URL, a database schema).
  if (meta?.path === false) return false;
  return PATH_OPTION_KEYS.has(key) || meta?.path === true || def?.reads?.[key] !== undefined;
}

const TOP_FIELDS = ['name', 'source', 'stages', 'sinks'];
const STAGE_FIELDS = ['name', 'filter', 'with', 'run', ...RUNTIME_KEYS];

interface Resolved {
  /** Every option, defaults filled in. */
  options: Record<string, unknown>;
  /** Only the options the file gives, for the command line (defaults stay the component's own). */
  given: Record<string, unknown>;
  runtime: RuntimeSettings;
}

/** The group a source's options name, when its definition has a group option and it is set. */
function groupOf(def: SourceDefinition, options: Record<string, unknown>): string | undefined {
  const value = def.groupOption === undefined ? undefined : options[def.groupOption];
  return typeof value === 'string' ? value : undefined;
}

/**
 * Checks a component's options: unknown keys get a did-you-mean, values are validated by the
 * component's own schema, and path options resolve against the pipeline's folder.
 */
function resolveOptions(
  def: ComponentDefinition,
  raw: Record<string, unknown>,
  at: YamlPath,
  dir: string,
  problems: Problem[],
  checks: Check[] | undefined,
): Resolved | undefined {
  const known = optionSpecs(def.options).map((s) => s.key);
  const options: Record<string, unknown> = {};
  const runtime: Record<string, unknown> = {};
  let ok = true;
  for (const [key, value] of Object.entries(raw)) {
    if (RUNTIME_KEYS.includes(key)) {
      runtime[key] = value;
    } else if (known.includes(key)) {
      options[key] = value;
    } else {
      problems.push({
        path: [...at, key],
        message: `unknown option "${key}" for ${def.kind} ${def.name}${suggestion(key, [...known, ...RUNTIME_KEYS])} (options: ${known.join(', ') || 'none'})`,
      });
      ok = false;
    }
  }
  const rt = z.object(runtimeShape).safeParse(runtime);
  if (!rt.success) {
    problems.push(...zodProblems(rt.error, at, () => []));
    ok = false;
  }
  let parsed: Record<string, unknown> | undefined;
  try {
    parsed = parseOptions(def, options, '@');
  } catch (error) {
    const message = messageOf(error).replace(/^@: /, '');
    const flag = /: --([a-z-]+):/.exec(message)?.[1];
    const key = flag ? known.find((k) => kebab(k) === flag) : undefined;
    problems.push({ path: key ? [...at, key] : at, message });
    ok = false;
  }
  if (!ok || !parsed || !rt.success) return undefined;
  for (const [key, value] of Object.entries(parsed)) {
    if (typeof value === 'string' && isPathOption(def, key)) parsed[key] = resolvePath(dir, value);
  }
  const given: Record<string, unknown> = {};
  for (const key of Object.keys(options)) if (parsed[key] !== undefined) given[key] = parsed[key];
  if (checks) queueChecks(def, parsed, Object.keys(given), at, dir, checks);
  return { options: parsed, given, runtime: runtimeSettings(rt.data, dir, FILE_RUNTIME_OPTIONS) };
}

/** The runtime options of `specs` that `values` gives, with paths resolved against the pipeline's folder. */
function runtimeSettings(values: Record<string, unknown>, dir: string, specs: readonly (RuntimeOptionSpec & { file: RuntimeFileValue })[]): RuntimeSettings {
  const settings: Record<string, unknown> = {};
  for (const spec of specs) {
    const value = values[spec.key];
    if (value !== undefined) settings[spec.key] = spec.file === 'path' ? resolvePath(dir, value as string) : value;
  }
  return settings as RuntimeSettings;
}

/** True when an option's value is a URL (a log on a server, nats://…; a database, postgres://…), which names no file. */
export function isUrl(value: string): boolean {
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(value);
}

function resolvePath(dir: string, path: string): string {
  if (isUrl(path)) return path;
  return isAbsolute(path) ? path : resolve(dir, path);
}

function unknownComponent(kind: ComponentKind, name: string): string {
  const names = componentNames(kind);
  return `unknown ${kind} "${name}"${suggestion(name, names)} (${kind}s: ${names.join(', ')})`;
}

/** Checks that a `where:` expression compiles, as the where filter in front of the sink compiles it. */
function expressionProblem(expr: string): string | undefined {
  try {
    compileExpression(expr, 'where');
    return undefined;
  } catch (error) {
    return messageOf(error).replace(/^where: /, '');
  }
}

/**
 * Parses and validates a pipeline file's text. `file` names it in errors; relative paths resolve against
 * its folder. Throws CqpError CONFIG listing every problem as `FILE:LINE: field: message`.
 */
export function parsePipeline(text: string, file: string, env: NodeJS.ProcessEnv = process.env): PipelinePlan {
  const { doc, problems, plan } = analysePipeline(text, file, env, undefined);
  if (problems.length > 0 || !plan) throw problemsError(file, doc, problems);
  return plan;
}

/**
 * What `cqp lint` checks: everything `parsePipeline` does, then what each component would refuse at
 * start (its option checks: views files, schemas, modules, expressions) and whether each `run:` program
 * can be started. Throws CqpError CONFIG with every problem found.
 */
export async function lintPipeline(text: string, file: string, env: NodeJS.ProcessEnv = process.env): Promise<PipelinePlan> {
  await loadPipelineComponents(text, env);
  const checks: Check[] = [];
  const { doc, problems, plan } = analysePipeline(text, file, env, checks);
  await runChecks(checks, problems);
  if (problems.length > 0 || !plan) throw problemsError(file, doc, problems);
  return plan;
}

/** Validates a pipeline's text: the plan when there are no problems; `checks` (when given) gets what lint runs next. */
function analysePipeline(text: string, file: string, env: NodeJS.ProcessEnv, checks: Check[] | undefined): { doc: Document; problems: Problem[]; plan?: PipelinePlan } {
  const absFile = resolve(file);
  const dir = dirname(absFile);
  const doc = parseYaml(text);
  const yamlError = doc.errors[0];
  if (yamlError) {
    const line = text.slice(0, yamlError.pos[0]).split('\n').length;
    throw new CqpError('CONFIG', `${file}:${line}: ${yamlError.message.split('\n')[0]} (the pipeline file is not valid YAML)`);
  }
  const problems: Problem[] = [];

  const raw = expandAll(doc.toJS(), env, [], problems);
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new CqpError('CONFIG', `${file}: a pipeline file is a YAML mapping with source, stages and sinks`);
  }
  const top = pipelineSchema.safeParse(raw);
  if (!top.success) {
    problems.push(...zodProblems(top.error, [], () => TOP_FIELDS));
    return { doc, problems };
  }
  const pipeline = top.data;
  const names = new Map<string, YamlPath>();
  const claim = (name: string, path: YamlPath): void => {
    const first = names.get(name);
    if (first) problems.push({ path, message: `name "${name}" is already used (at line ${lineOf(doc, first) ?? '?'}); names must be unique` });
    else names.set(name, path);
  };

  // Source.
  const { type: sourceType, name: sourceName = 'source', ...sourceRaw } = pipeline.source;
  claim(sourceName, ['source']);
  let source: SourcePlan | undefined;
  const sourceDef = findComponent('source', sourceType);
  if (!sourceDef) {
    problems.push({ path: ['source', 'type'], message: unknownComponent('source', sourceType) });
  } else {
    const r = resolveOptions(sourceDef, sourceRaw, ['source'], dir, problems, checks);
    if (r) {
      source = {
        name: sourceName,
        type: sourceType,
        options: r.options,
        resumable: sourceDef.resumable,
        readsStdin: sourceDef.readsStdin === true,
        group: groupOf(sourceDef, r.options),
        command: cliCommand(['source', sourceType, ...optionsToArgv(sourceDef, r.given), ...runtimeArgv(r.runtime)]),
      };
    }
  }

  // Stages.
  const stages: StagePlan[] = [];
  (pipeline.stages ?? []).forEach((item, i) => {
    const at: YamlPath = ['stages', i];
    const parsed = stageSchema.safeParse(item);
    if (!parsed.success) {
      problems.push(...zodProblems(parsed.error, at, () => STAGE_FIELDS));
      return;
    }
    const s = parsed.data;
    claim(s.name, [...at, 'name']);
    if ((s.filter === undefined) === (s.run === undefined)) {
      problems.push({ path: at, message: 'a stage has either filter: NAME (with: its options) or run: COMMAND, not both or neither' });
      return;
    }
    const runtime: Record<string, unknown> = {};
    for (const k of RUNTIME_KEYS) if (k in s) runtime[k] = (s as Record<string, unknown>)[k];
    if (s.run !== undefined) {
      if (s.with !== undefined) problems.push({ path: [...at, 'with'], message: 'with: gives options to a built-in filter; put a run: program\'s arguments in run:' });
      let argv: string[];
      try {
        argv = typeof s.run === 'string' ? splitCommandLine(s.run) : s.run;
      } catch (error) {
        problems.push({ path: [...at, 'run'], message: messageOf(error) });
        return;
      }
      if (argv.length === 0) {
        problems.push({ path: [...at, 'run'], message: 'run: needs a command' });
        return;
      }
      const settings = runtimeSettings(runtime, dir, PROGRAM_RUNTIME_OPTIONS);
      if (settings.onError === 'dead-letter' && !settings.deadLetter) problems.push({ path: [...at, 'onError'], message: 'onError: dead-letter needs deadLetter: FILE (where rejected lines are appended)' });
      // The supervisor applies only some runtime options to what a program writes (it does not cut a program's lines, say).
      for (const spec of FILE_RUNTIME_OPTIONS) {
        if (!spec.programs && runtime[spec.key] !== undefined) problems.push({ path: [...at, spec.key], message: `${spec.key} applies to built-in filters, not to run: programs; remove it` });
      }
      const program = argv[0] as string;
      checks?.push({ path: [...at, 'run'], run: () => findProgram(program, dir, env) });
      stages.push({ name: s.name, filter: undefined, options: {}, command: { file: program, args: argv.slice(1) }, runtime: settings });
      return;
    }
    const filterName = s.filter as string;
    const def = findComponent('filter', filterName);
    if (!def) {
      problems.push({ path: [...at, 'filter'], message: unknownComponent('filter', filterName) });
      return;
    }
    const r = resolveOptions(def, { ...(s.with ?? {}), ...runtime }, [...at, 'with'], dir, problems, checks);
    if (!r) return;
    stages.push({
      name: s.name,
      filter: filterName,
      options: r.options,
      command: cliCommand(['filter', filterName, ...optionsToArgv(def, r.given), ...runtimeArgv(r.runtime)]),
    });
  });

  // Sinks.
  const sinkDrafts: Array<Omit<SinkPlan, 'logInput'>> = [];
  const sinkDefs = new Map<string, SinkDefinition>();
  pipeline.sinks.forEach((item, i) => {
    const at: YamlPath = ['sinks', i];
    const { name, type, where: expr, ...rest } = item;
    claim(name, [...at, 'name']);
    const def = findComponent('sink', type);
    if (!def) {
      problems.push({ path: [...at, 'type'], message: unknownComponent('sink', type) });
      return;
    }
    let whereCommand: Command | undefined;
    if (expr !== undefined) {
      const bad = expressionProblem(expr);
      if (bad) problems.push({ path: [...at, 'where'], message: bad });
      const whereDef = findComponent('filter', 'where');
      if (whereDef) whereCommand = cliCommand(['filter', 'where', ...optionsToArgv(whereDef, { [whereDef.positional ?? 'expr']: expr })]);
    }
    const r = resolveOptions(def, rest, at, dir, problems, checks);
    if (!r) return;
    const store = def.store === undefined ? undefined : r.options[def.store.option];
    // The workers of a group write their sinks' stores together, each for its partitions.
    const shared = def.store?.sharedBy;
    if (source?.group !== undefined && shared !== undefined) {
      r.options[shared] = source.group;
      r.given[shared] = source.group;
    } else if (source?.group !== undefined && def.store !== undefined) {
      problems.push({
        path: [...at, 'type'],
        message: `a ${type} sink cannot be written by the workers of group ${source.group} together (each would keep only the partitions it holds); give the group a sink they share, such as postgres`,
      });
    }
    sinkDefs.set(name, def);
    sinkDrafts.push({
      name,
      type,
      options: r.options,
      exactlyOnce: isExactlyOnce(def),
      store: typeof store === 'string' ? store : undefined,
      writesStdout: def.writesStdout === true,
      where: expr,
      whereCommand,
      command: cliCommand(['sink', type, ...optionsToArgv(def, r.given), ...runtimeArgv(r.runtime)]),
    });
  });

  if (problems.length > 0 || !source) return { doc, problems };

  // Views follow the log: beside a sink that writes a command log, the sinks that follow logs read it rather than the stages.
  const logSink = sinkDrafts.find((s) => sinkDefs.get(s.name)?.store?.commandLog === true);
  const logPath = logSink?.store;
  const sinks: SinkPlan[] = sinkDrafts.map((s) => {
    const follows = logPath !== undefined && sinkDefs.get(s.name)?.followsLog === true;
    if (follows && s.where) {
      problems.push({
        path: ['sinks', pipeline.sinks.findIndex((x) => x.name === s.name), 'where'],
        message: `a ${s.type} sink follows the ${logSink?.type ?? ''} sink, so where: does not apply; filter in the view definitions instead`,
      });
    }
    return { ...s, logInput: follows ? { path: logPath, follow: true, args: ['--read-log', logPath, '--follow'] } : undefined };
  });
  if (problems.length > 0) return { doc, problems };

  return { doc, problems, plan: { file: absFile, dir, name: pipeline.name ?? 'pipeline', text, source, stages, sinks } };
}

/** Reads a pipeline file's text. */
export function readPipelineFile(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (error) {
    throw new CqpError('CONFIG', `cannot read pipeline file ${file}: ${messageOf(error)}`, { cause: error });
  }
}

/**
 * Loads the built-in components a pipeline's text names (and `where` when a sink filters), so that
 * parsing it can look them up; a name it cannot read (the text does not parse) is left for parsing to report.
 */
export async function loadPipelineComponents(text: string, env: NodeJS.ProcessEnv = process.env): Promise<void> {
  const doc = parseYaml(text);
  if (doc.errors.length > 0) return;
  const raw = expandAll(doc.toJS(), env, [], []);
  const top = pipelineSchema.safeParse(raw);
  if (!top.success) return;
  const { source, stages = [], sinks } = top.data;
  const filters = stages.flatMap((s) => {
    const parsed = stageSchema.safeParse(s);
    return parsed.success && parsed.data.filter !== undefined ? [parsed.data.filter] : [];
  });
  if (sinks.some((s) => s.where !== undefined)) filters.push('where');
  await Promise.all([
    loadNamedComponents('source', [source.type]),
    loadNamedComponents('filter', filters),
    loadNamedComponents('sink', sinks.map((s) => s.type)),
  ]);
}

/** Reads a pipeline file, loads the components it names and validates it. */
export async function openPipeline(file: string, env: NodeJS.ProcessEnv = process.env): Promise<PipelinePlan> {
  const text = readPipelineFile(file);
  await loadPipelineComponents(text, env);
  return parsePipeline(text, file, env);
}

/** Reads and validates a pipeline file whose components are loaded (`openPipeline` loads them). */
export function loadPipeline(file: string, env: NodeJS.ProcessEnv = process.env): PipelinePlan {
  return parsePipeline(readPipelineFile(file), file, env);
}
