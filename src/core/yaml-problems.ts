/**
 * Problems found in a YAML file (a pipeline, a pipeline test file), reported the same way for each:
 * zod's issues turned into problems at their YAML paths, unknown fields with a did-you-mean, and every
 * problem as `FILE:LINE: field: message`.
 */
import * as z from 'zod';
import type { Document } from 'yaml';
import { CqpError } from './errors.js';
import { suggestion } from './suggest.js';
import { formatYamlPath, lineOf, type YamlPath } from '../views/yaml-location.js';

/** A problem in a YAML file: where it is (a YAML path) and what is wrong. */
export interface Problem {
  path: YamlPath;
  message: string;
}

/** zod's issues as problems under `base`; an unknown field gets a did-you-mean among `fieldsAt(its object's path)`. */
export function zodProblems(error: z.ZodError, base: YamlPath, fieldsAt: (path: YamlPath) => readonly string[]): Problem[] {
  return error.issues.map((issue) => {
    const path = [...base, ...issue.path];
    if (issue.code === 'unrecognized_keys') {
      const fields = fieldsAt(issue.path);
      const words = issue.keys.map((k) => `unknown field "${k}"${suggestion(k, fields)}`);
      return { path: [...path, issue.keys[0] as string], message: `${words.join('; ')} (fields: ${fields.join(', ')})` };
    }
    return { path, message: issue.message };
  });
}

/** The fields of the object schema found by following `path` down from `schema` (arrays, optionals and records stepped through). */
export function fieldsOf(schema: z.ZodType): (path: YamlPath) => readonly string[] {
  return (path) => {
    let node: z.ZodType | undefined = schema;
    for (const segment of [...path, undefined]) {
      while (node instanceof z.ZodOptional || node instanceof z.ZodDefault || node instanceof z.ZodNullable) node = node.unwrap() as z.ZodType;
      if (segment === undefined) break;
      if (node instanceof z.ZodObject) node = node.shape[String(segment)] as z.ZodType | undefined;
      else if (node instanceof z.ZodArray) node = node.element as z.ZodType;
      else if (node instanceof z.ZodRecord) node = node.valueType as z.ZodType;
      else node = undefined;
    }
    return node instanceof z.ZodObject ? Object.keys(node.shape) : [];
  };
}

/** Every problem as `FILE:LINE: field: message`, in line order, as one CONFIG error. */
export function problemsError(file: string, doc: Document, problems: Problem[]): CqpError {
  const located = problems.map((p) => ({ ...p, line: lineOf(doc, p.path) }));
  located.sort((a, b) => (a.line ?? 0) - (b.line ?? 0));
  return new CqpError(
    'CONFIG',
    located
      .map((p) => {
        const field = formatYamlPath(p.path);
        return `${file}${p.line === undefined ? '' : `:${p.line}`}: ${field ? `${field}: ` : ''}${p.message}`;
      })
      .join('\n'),
  );
}
