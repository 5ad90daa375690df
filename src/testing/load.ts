/**
 * Reading a pipeline test file: YAML, its schema, then what the schema cannot see (names of stages and
 * sinks in the pipeline, event files, expressions). Every problem is reported as `FILE:LINE: field:
 * message`, with a did-you-mean for a name that is close to one of the pipeline's.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import type { Document } from 'yaml';
import { CqpError, messageOf } from '../core/errors.js';
import { compileExpression } from '../core/expression.js';
import { findComponent } from '../core/registry.js';
import { suggestion } from '../core/suggest.js';
import { fieldsOf, problemsError, zodProblems, type Problem } from '../core/yaml-problems.js';
import { openPipeline } from '../supervisor/config.js';
import type { PipelinePlan } from '../supervisor/plan.js';
import { parseYaml, type YamlPath } from '../views/yaml-location.js';
import { testFileSchema, type PipelineTest } from './test-file.js';

/** One test, checked against its pipeline: its events as NDJSON text per component they go into. */
export interface LoadedTest {
  test: PipelineTest;
  at: YamlPath;
  inserted: Map<string, string>;
}

export interface LoadedTestFile {
  file: string;
  doc: Document;
  plan: PipelinePlan;
  tests: LoadedTest[];
}

/** The word a test file uses for the source, whatever the pipeline calls it. */
export const SOURCE = 'source';

function readText(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (error) {
    throw new CqpError('CONFIG', `cannot read ${what} ${file}: ${messageOf(error)}`, { cause: error });
  }
}

/** Reads and validates a test file and the pipeline it names; throws CqpError CONFIG listing every problem. */
export async function loadTestFile(file: string): Promise<LoadedTestFile> {
  const text = readText(file, 'test file');
  const doc = parseYaml(text);
  const yamlError = doc.errors[0];
  if (yamlError) {
    const line = text.slice(0, yamlError.pos[0]).split('\n').length;
    throw new CqpError('CONFIG', `${file}:${line}: ${yamlError.message.split('\n')[0]} (the test file is not valid YAML)`);
  }
  const parsed = testFileSchema.safeParse(doc.toJS());
  if (!parsed.success) throw problemsError(file, doc, zodProblems(parsed.error, [], fieldsOf(testFileSchema)));
  const dir = dirname(resolve(file));
  const pipelineFile = resolve(dir, parsed.data.pipeline);
  if (!existsSync(pipelineFile)) throw problemsError(file, doc, [{ path: ['pipeline'], message: `${pipelineFile}: no such file (the path is relative to the test file)` }]);
  let plan: PipelinePlan;
  try {
    plan = await openPipeline(pipelineFile);
  } catch (error) {
    throw problemsError(file, doc, [{ path: ['pipeline'], message: `the pipeline does not validate:\n${messageOf(error)}` }]);
  }
  const problems: Problem[] = [];
  const tests = parsed.data.tests.map((test, i) => checkTest(test, ['tests', i], plan, dir, problems));
  const names = new Map<string, number>();
  parsed.data.tests.forEach((test, i) => {
    const first = names.get(test.name);
    if (first !== undefined) problems.push({ path: ['tests', i, 'name'], message: `"${test.name}" is already the name of tests[${first}]; give each test its own name` });
    else names.set(test.name, i);
  });
  if (problems.length > 0) throw problemsError(file, doc, problems);
  return { file, doc, plan, tests };
}

function checkTest(test: PipelineTest, at: YamlPath, plan: PipelinePlan, dir: string, problems: Problem[]): LoadedTest {
  const stages = plan.stages.map((s) => s.name);
  const sinks = plan.sinks.map((s) => s.name);
  const entries = [SOURCE, ...stages];
  const exits = [...stages, ...sinks];
  const name = (value: string, path: YamlPath, allowed: string[], what: string): boolean => {
    if (allowed.includes(value)) return true;
    problems.push({ path, message: `"${value}" is not ${what} of ${plan.file}${suggestion(value, allowed)} (${allowed.join(', ')})` });
    return false;
  };
  const inserted = new Map<string, string>();
  test.inputs.forEach((input, j) => {
    const path = [...at, 'inputs', j];
    const known = input.insert_at === plan.source.name || name(input.insert_at, [...path, 'insert_at'], entries, 'source or a stage');
    let text = '';
    if (input.events) text = input.events.map((e) => `${JSON.stringify(e)}\n`).join('');
    else if (input.file !== undefined) {
      const events = resolve(dir, input.file);
      if (existsSync(events)) text = readFileSync(events, 'utf8').replace(/([^\n])$/, '$1\n');
      else problems.push({ path: [...path, 'file'], message: `${events}: no such file (the path is relative to the test file)` });
    }
    const key = input.insert_at === SOURCE ? plan.source.name : input.insert_at;
    if (known) inserted.set(key, (inserted.get(key) ?? '') + text);
  });
  (test.outputs ?? []).forEach((output, j) => {
    const path = [...at, 'outputs', j];
    name(output.extract_from, [...path, 'extract_from'], exits, 'a stage or a sink');
    (output.conditions ?? []).forEach((condition, k) => {
      if (condition.expr === undefined) return;
      try {
        compileExpression(condition.expr, 'expr');
      } catch (error) {
        problems.push({ path: [...path, 'conditions', k, 'expr'], message: messageOf(error).replace(/^expr: /, '') });
      }
    });
  });
  (test.no_outputs_from ?? []).forEach((from, j) => name(from, [...at, 'no_outputs_from', j], exits, 'a stage or a sink'));
  const viewSinks = plan.sinks.filter((s) => findComponent('sink', s.type)?.store?.sqlite === true).map((s) => s.name);
  (test.views ?? []).forEach((view, j) => name(view.sink, [...at, 'views', j, 'sink'], viewSinks, 'a sink keeping SQLite views'));
  if (!test.outputs?.length && !test.no_outputs_from?.length && !test.views?.length) {
    problems.push({ path: [...at, 'name'], message: `test "${test.name}" checks nothing: give it outputs, no_outputs_from or views` });
  }
  return { test, at, inserted };
}
