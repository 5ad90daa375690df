/**
 * Checking a test's expectations against what its run produced: outputs (count and conditions),
 * `no_outputs_from`, and `views` queries. Each failure says where in the test file the expectation is,
 * what it is, and how expected and actual differ.
 */
import Database from 'better-sqlite3';
import type { JsonObject } from '../core/component.js';
import { messageOf } from '../core/errors.js';
import { compileExpression } from '../core/expression.js';
import type { YamlPath } from '../views/yaml-location.js';
import { canonical, jsonContains, jsonDiff, jsonEquals, listDiff, pruneTo } from './diff.js';
import type { TestRun } from './run-test.js';
import type { LoadedTest } from './load.js';
import type { TestCondition, TestView } from './test-file.js';

/** One expectation that did not hold: where it is in the test file, what failed, and the diff. */
export interface Failure {
  path: YamlPath;
  message: string;
  diff: string[];
}

/** Events listed one a line under a message (at most a few). */
function listed(events: JsonObject[]): string[] {
  const shown = events.slice(0, 5).map((e) => `  ${canonical(e)}`);
  return events.length > 5 ? [...shown, `  … and ${events.length - 5} more`] : shown;
}

/** The first event that `condition` fails on, as a failure; undefined when every event passes. */
function checkCondition(condition: TestCondition, events: JsonObject[], from: string, path: YamlPath): Failure | undefined {
  const which = (i: number): string => `event ${i + 1} of ${events.length} from ${from}`;
  if (condition.json_equals !== undefined) {
    const expected = condition.json_equals;
    const i = events.findIndex((e) => !jsonEquals(e, expected));
    if (i >= 0) return { path, message: `json_equals: ${which(i)} differs`, diff: jsonDiff(expected, events[i]) };
  } else if (condition.json_contains !== undefined) {
    const expected = condition.json_contains;
    const i = events.findIndex((e) => !jsonContains(e, expected));
    if (i >= 0) return { path, message: `json_contains: ${which(i)} differs (fields the condition names)`, diff: jsonDiff(expected, pruneTo(events[i], expected)) };
  } else if (condition.expr !== undefined) {
    const { fn } = compileExpression(condition.expr, 'expr');
    for (const [i, event] of events.entries()) {
      let value: unknown;
      try {
        value = fn(structuredClone(event));
      } catch (error) {
        return { path, message: `expr: ${condition.expr} threw on ${which(i)}: ${messageOf(error)}`, diff: listed([event]) };
      }
      if (!value) return { path, message: `expr: ${condition.expr} is ${canonical(value)} for ${which(i)}, expected true`, diff: listed([event]) };
    }
  }
  return undefined;
}

function queryRows(db: string, view: TestView): unknown[] {
  const database = new Database(db, { readonly: true, fileMustExist: true });
  try {
    return database.prepare(view.query).all();
  } finally {
    database.close();
  }
}

/** Every expectation of `loaded` that `run` does not meet. */
export function checkExpectations(loaded: LoadedTest, run: TestRun): Failure[] {
  const { test, at } = loaded;
  const failures: Failure[] = [];
  (test.outputs ?? []).forEach((output, j) => {
    const path = [...at, 'outputs', j];
    const from = output.extract_from;
    const events = run.outputs.get(from) ?? [];
    if (output.count !== undefined && events.length !== output.count) {
      failures.push({ path: [...path, 'count'], message: `expected ${output.count} event${output.count === 1 ? '' : 's'} from ${from}, got ${events.length}`, diff: listed(events) });
    }
    const conditions = output.conditions ?? [];
    if (conditions.length > 0 && events.length === 0 && output.count !== 0) {
      failures.push({ path: [...path, 'conditions'], message: `no event came out of ${from}`, diff: [] });
      return;
    }
    conditions.forEach((condition, k) => {
      const failure = checkCondition(condition, events, from, [...path, 'conditions', k]);
      if (failure) failures.push(failure);
    });
  });
  (test.no_outputs_from ?? []).forEach((from, j) => {
    const events = run.outputs.get(from) ?? [];
    if (events.length > 0) failures.push({ path: [...at, 'no_outputs_from', j], message: `${events.length} event${events.length === 1 ? '' : 's'} came out of ${from}, expected none`, diff: listDiff([], events) });
  });
  (test.views ?? []).forEach((view, j) => {
    const path = [...at, 'views', j];
    const db = run.databases.get(view.sink);
    let rows: unknown[];
    try {
      if (db === undefined) throw new Error(`sink ${view.sink} wrote no database`);
      rows = queryRows(db, view);
    } catch (error) {
      failures.push({ path: [...path, 'query'], message: `${messageOf(error)}`, diff: [] });
      return;
    }
    if (!jsonEquals(rows, view.rows)) failures.push({ path: [...path, 'rows'], message: `the rows of ${view.query} on ${view.sink} differ`, diff: listDiff(view.rows, rows) });
  });
  return failures;
}
