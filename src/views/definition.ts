import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import * as z from 'zod';
import { CqpError, messageOf } from '../core/errors.js';
import { parsePath } from '../core/paths.js';
import { suggestion } from '../core/suggest.js';
import { formatYamlPath, lineOf, parseYaml } from './yaml-location.js';
import type { YamlPath } from './yaml-location.js';

/** How a column's value is stored; untyped columns keep what the event holds. */
export type ColumnType = 'text' | 'integer' | 'real' | 'json' | 'boolean';
export const COLUMN_TYPES: readonly ColumnType[] = ['text', 'integer', 'real', 'json', 'boolean'];

export interface ColumnDefinition {
  name: string;
  /** Where the value is in an event; undefined for a column only `increment` writes. */
  path: string | undefined;
  type: ColumnType | undefined;
}

/** What an event type does to a view's row. */
export type ViewAction =
  | { kind: 'upsert' }
  | { kind: 'insert' }
  | { kind: 'delete' }
  | { kind: 'increment'; columns: Record<string, string> };
export const ACTION_WORDS = ['upsert', 'insert', 'delete', 'increment'] as const;

export interface KeyDefinition {
  /** The primary-key column of the view's table. */
  column: string;
  /** Paths tried in order; the first present gives the key. */
  paths: string[];
  type: ColumnType;
}

/** A view maintained from columns and actions. */
export interface ColumnViewDefinition {
  kind: 'columns';
  table: string;
  key: KeyDefinition;
  /** Paths tried in order; the first present gives the event type matched against `on`. */
  typePaths: string[];
  columns: ColumnDefinition[];
  on: Record<string, ViewAction>;
}

/** A view maintained by a user module (`handler: ./stats.mjs`). */
export interface HandlerViewDefinition {
  kind: 'handler';
  /** The view's name (the module usually creates a table of that name). */
  table: string;
  /** Absolute path of the module. */
  handler: string;
}

export type ViewDefinition = ColumnViewDefinition | HandlerViewDefinition;

export const DEFAULT_KEY_PATHS = ['header.rel.id', 'id'];
export const DEFAULT_TYPE_PATHS = ['header.eventName.0', 'type'];
export const DEFAULT_KEY_COLUMN = 'id';

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;
const VIEW_FIELDS = ['table', 'key', 'type', 'columns', 'on', 'handler'];
const KEY_FIELDS = ['column', 'path', 'type'];
const COLUMN_FIELDS = ['path', 'type'];

const identifier = (what: string) =>
  z.string().superRefine((s, ctx) => {
    if (!IDENTIFIER.test(s)) {
      ctx.addIssue({ code: 'custom', message: `${what} "${s}" is not an SQL identifier (use letters, digits and _, not starting with a digit)` });
    } else if (/^(sqlite_|cqp_)/i.test(s)) {
      ctx.addIssue({ code: 'custom', message: `${what} "${s}" is reserved (names starting with sqlite_ or cqp_ belong to SQLite and cqp)` });
    }
  });

const dotPath = z.string().superRefine((s, ctx) => {
  try {
    parsePath(s);
  } catch (error) {
    ctx.addIssue({ code: 'custom', message: messageOf(error) });
  }
});

const columnType = z.string().transform((s, ctx): ColumnType => {
  if ((COLUMN_TYPES as readonly string[]).includes(s)) return s as ColumnType;
  ctx.addIssue({ code: 'custom', message: `unknown column type "${s}"${suggestion(s, COLUMN_TYPES)} (types: ${COLUMN_TYPES.join(', ')})` });
  return z.NEVER;
});

const keySchema = z.union([
  dotPath,
  z.strictObject({ column: identifier('key column').optional(), path: dotPath, type: columnType.optional() }),
]);

const columnSchema = z.union([dotPath, z.strictObject({ path: dotPath.optional(), type: columnType.optional() })]);

const actionSchema = z.unknown().transform((v, ctx): ViewAction => {
  const words = `actions: upsert, insert, delete, { increment: { column: path } }`;
  if (typeof v === 'string') {
    if (v === 'upsert' || v === 'insert' || v === 'delete') return { kind: v };
    ctx.addIssue({
      code: 'custom',
      message: v === 'increment' ? 'increment needs the columns to add to, like { increment: { sold: payload.qty } }' : `unknown action "${v}"${suggestion(v, ACTION_WORDS)} (${words})`,
    });
    return z.NEVER;
  }
  if (typeof v === 'object' && v !== null && !Array.isArray(v)) {
    const entries = Object.entries(v);
    const [word, body] = entries[0] ?? [];
    if (entries.length !== 1 || word !== 'increment') {
      const name = entries.map(([k]) => k).find((k) => k !== 'increment') ?? '';
      ctx.addIssue({ code: 'custom', message: `unknown action "${name}"${suggestion(name, ACTION_WORDS)} (${words})` });
      return z.NEVER;
    }
    if (typeof body !== 'object' || body === null || Array.isArray(body) || Object.keys(body).length === 0) {
      ctx.addIssue({ code: 'custom', path: ['increment'], message: 'increment needs a map of column: path, like { increment: { sold: payload.qty } }' });
      return z.NEVER;
    }
    const columns: Record<string, string> = {};
    for (const [column, path] of Object.entries(body)) {
      if (typeof path !== 'string') {
        ctx.addIssue({ code: 'custom', path: ['increment', column], message: 'expected the dot path of the number to add, like payload.qty' });
        continue;
      }
      try {
        parsePath(path);
      } catch (error) {
        ctx.addIssue({ code: 'custom', path: ['increment', column], message: messageOf(error) });
        continue;
      }
      columns[column] = path;
    }
    return { kind: 'increment', columns };
  }
  ctx.addIssue({ code: 'custom', message: `expected an action (${words})` });
  return z.NEVER;
});

const viewSchema = z.strictObject({
  table: identifier('table name').describe('the table the view keeps (an SQL identifier)'),
  key: keySchema.optional().describe('the row key: a dot path (default header.rel.id, then id), or { column, path, type }'),
  type: dotPath.optional().describe('the dot path of the event type matched against on: (default header.eventName.0, then type)'),
  columns: z.record(z.string(), columnSchema).optional().describe(`name: dot path, or name: { path, type } (types: ${COLUMN_TYPES.join(', ')})`),
  on: z.record(z.string().min(1), actionSchema).optional().describe('event type: upsert | insert | delete | { increment: { column: path } }'),
  handler: z.string().min(1).optional().describe('a JavaScript module that keeps the view instead (relative to the views file)'),
});

/** A views file, as `cqp run` validates it (and `cqp schema views` describes it). */
export const viewsFileSchema = z
  .strictObject({
    views: z.array(viewSchema).min(1, 'a views file needs at least one view'),
  })
  .describe('a cqp views file: the tables a sqlite or postgres sink keeps from events');

type RawView = z.infer<typeof viewSchema>;

interface Problem {
  path: YamlPath;
  message: string;
}

/** Allowed field names of the object at a zod path, for "did you mean" on unknown fields. */
function fieldsAt(path: YamlPath): readonly string[] {
  if (path.length === 0) return ['views'];
  if (path.length === 2 && path[0] === 'views') return VIEW_FIELDS;
  if (path.length === 3 && path[2] === 'key') return KEY_FIELDS;
  if (path.length === 4 && path[2] === 'columns') return COLUMN_FIELDS;
  return [];
}

function zodProblems(error: z.ZodError): Problem[] {
  const out: Problem[] = [];
  for (const issue of error.issues) {
    if (issue.code === 'unrecognized_keys') {
      const allowed = fieldsAt(issue.path);
      for (const key of issue.keys) {
        out.push({
          path: [...issue.path, key],
          message: `unknown field "${key}"${suggestion(key, allowed)}${allowed.length ? ` (fields: ${allowed.join(', ')})` : ''}`,
        });
      }
    } else if (issue.code === 'invalid_union') {
      // A column or key given in neither accepted form: say what each form looks like.
      const field = issue.path.includes('key') ? 'key' : 'column';
      const nested = issue.errors.flat().filter((i) => i.code !== 'invalid_type');
      if (nested.length > 0) {
        for (const i of nested) {
          const sub = zodProblems(new z.ZodError([{ ...i, path: [...issue.path, ...i.path] }]));
          out.push(...sub);
        }
      } else {
        const form = field === 'key' ? 'a dot path (header.rel.id) or { column, path, type }' : 'a dot path (payload.name) or { path, type }';
        out.push({ path: issue.path, message: `expected ${form}` });
      }
    } else {
      out.push({ path: issue.path, message: issue.message });
    }
  }
  return out;
}

function columnView(raw: RawView, at: YamlPath, problems: Problem[]): ColumnViewDefinition {
  const key: KeyDefinition =
    raw.key === undefined ? { column: DEFAULT_KEY_COLUMN, paths: DEFAULT_KEY_PATHS, type: 'text' }
    : typeof raw.key === 'string' ? { column: DEFAULT_KEY_COLUMN, paths: [raw.key], type: 'text' }
    : { column: raw.key.column ?? DEFAULT_KEY_COLUMN, paths: [raw.key.path], type: raw.key.type ?? 'text' };
  const columns: ColumnDefinition[] = [];
  for (const [name, spec] of Object.entries(raw.columns ?? {})) {
    const result = identifier('column name').safeParse(name);
    if (!result.success) {
      problems.push({ path: [...at, 'columns', name], message: result.error.issues[0]?.message ?? 'bad column name' });
      continue;
    }
    if (name.toLowerCase() === key.column.toLowerCase()) {
      problems.push({
        path: [...at, 'columns', name],
        message: `column "${name}" is also the key column; name the key column otherwise with key: { column: ${name}_key, path: ... }`,
      });
      continue;
    }
    columns.push(typeof spec === 'string' ? { name, path: spec, type: undefined } : { name, path: spec.path, type: spec.type });
  }
  const byName = new Map(columns.map((c) => [c.name, c]));
  const on = raw.on ?? {};
  for (const [type, action] of Object.entries(on)) {
    if (action.kind !== 'increment') continue;
    for (const column of Object.keys(action.columns)) {
      const c = byName.get(column);
      if (!c) {
        problems.push({
          path: [...at, 'on', type, 'increment', column],
          message: `increment of unknown column "${column}"${suggestion(column, byName.keys())}; declare it under columns, like ${column}: { type: integer }`,
        });
      } else if (c.type !== 'integer' && c.type !== 'real') {
        problems.push({
          path: [...at, 'on', type, 'increment', column],
          message: `column "${column}" is incremented, so declare it with type integer or real: ${column}: { ${c.path ? `path: ${c.path}, ` : ''}type: integer }`,
        });
      }
    }
  }
  if (raw.on === undefined || Object.keys(raw.on).length === 0) {
    problems.push({
      path: [...at],
      message: 'a view needs on: (event type: upsert | insert | delete | { increment: ... }) and columns (name: path), or a handler module',
    });
  }
  return { kind: 'columns', table: raw.table, key, typePaths: raw.type ? [raw.type] : DEFAULT_TYPE_PATHS, columns, on };
}

/** Validates parsed views-file content; `file` names the file in messages and anchors handler paths. */
function buildViews(data: unknown, file: string, problems: Problem[]): ViewDefinition[] {
  const parsed = viewsFileSchema.safeParse(data);
  if (!parsed.success) {
    problems.push(...zodProblems(parsed.error));
    return [];
  }
  const views: ViewDefinition[] = [];
  const tables = new Map<string, number>();
  parsed.data.views.forEach((raw, i) => {
    const at: YamlPath = ['views', i];
    const seen = tables.get(raw.table.toLowerCase());
    if (seen !== undefined) {
      problems.push({ path: [...at, 'table'], message: `table "${raw.table}" is already the table of views[${seen}]; give each view its own table` });
    }
    tables.set(raw.table.toLowerCase(), i);
    if (raw.handler !== undefined) {
      for (const field of ['key', 'type', 'columns', 'on'] as const) {
        if (raw[field] !== undefined) {
          problems.push({ path: [...at, field], message: `a view with a handler module takes no ${field} (the module decides what each event does)` });
        }
      }
      const handler = resolve(dirname(file), raw.handler);
      if (!existsSync(handler)) {
        problems.push({ path: [...at, 'handler'], message: `handler module ${handler} not found (paths are relative to the views file)` });
      }
      views.push({ kind: 'handler', table: raw.table, handler });
    } else {
      views.push(columnView(raw, at, problems));
    }
  });
  return views;
}

function configError(file: string, problems: Problem[], doc?: ReturnType<typeof parseYaml>): CqpError {
  const located = problems.map((p) => ({ ...p, line: doc ? lineOf(doc, p.path) : undefined }));
  located.sort((a, b) => (a.line ?? 0) - (b.line ?? 0));
  const lines = located.map((p) => {
    const field = formatYamlPath(p.path);
    return `${file}${p.line === undefined ? '' : `:${p.line}`}: ${field ? `field ${field}: ` : ''}${p.message}`;
  });
  return new CqpError('CONFIG', lines.join('\n'));
}

/** Parses and validates the text of a views file (YAML); `file` names it in errors and anchors handler paths. */
export function parseViews(text: string, file: string): ViewDefinition[] {
  const doc = parseYaml(text);
  const yamlError = doc.errors[0];
  if (yamlError) {
    const line = yamlError.linePos?.[0].line;
    throw new CqpError('CONFIG', `${file}${line === undefined ? '' : `:${line}`}: ${yamlError.message.split('\n')[0]} (the views file is not valid YAML)`);
  }
  const problems: Problem[] = [];
  const views = buildViews(doc.toJS(), file, problems);
  if (problems.length > 0) throw configError(file, problems, doc);
  return views;
}

/** Reads and validates a views file before any event is read; CONFIG errors name file, line and field. */
export function loadViewsFile(path: string): ViewDefinition[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new CqpError('CONFIG', `cannot read views file ${path}: ${messageOf(error)}`, { cause: error });
  }
  return parseViews(text, path);
}

/**
 * A fingerprint of a view's definition: a view whose fingerprint changed is rebuilt from empty. A
 * handler view's fingerprint covers its module's source.
 */
export function viewHash(view: ViewDefinition): string {
  const hash = createHash('sha256');
  if (view.kind === 'handler') {
    hash.update(`handler\0${view.table}\0`);
    try {
      hash.update(readFileSync(view.handler));
    } catch (error) {
      throw new CqpError('CONFIG', `cannot read handler module ${view.handler}: ${messageOf(error)}`, { cause: error });
    }
  } else {
    const { table, key, typePaths, columns, on } = view;
    hash.update(JSON.stringify({ v: 1, table, key, typePaths, columns, on }));
  }
  return hash.digest('hex').slice(0, 32);
}
