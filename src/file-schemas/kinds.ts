/**
 * `cqp schema KIND`: the JSON Schema of each kind of file cqp reads, generated from the zod schema that
 * validates that kind of file. A new kind of file is one row of FILE_KINDS.
 */
import type { z } from 'zod';
import { CqpError } from '../core/errors.js';
import { suggestion } from '../core/suggest.js';

export interface FileKind {
  /** What the file is, for `--help` and the schema's title. */
  title: string;
  /** The zod schema that validates the file (loaded when asked: it may load every component). */
  schema(): Promise<z.ZodType>;
}

export const FILE_KINDS: Record<string, FileKind> = {
  pipeline: {
    title: 'a pipeline file (cqp run FILE)',
    schema: async () => (await import('./pipeline.js')).pipelineFileSchema(),
  },
  views: {
    title: 'a views file (the views option of a sqlite or postgres sink)',
    schema: async () => (await import('../views/definition.js')).viewsFileSchema,
  },
  test: {
    title: 'a pipeline test file (cqp test FILE)',
    schema: async () => (await import('../testing/test-file.js')).testFileSchema,
  },
};

/** The JSON Schema (draft 2020-12) of one kind of file, as text. */
export async function fileSchemaText(kind: string): Promise<string> {
  const entry = Object.hasOwn(FILE_KINDS, kind) ? FILE_KINDS[kind] : undefined;
  if (entry === undefined) {
    const kinds = Object.keys(FILE_KINDS);
    throw new CqpError('USAGE', `schema: unknown kind of file "${kind}"${suggestion(kind, kinds)} (kinds: ${kinds.join(', ')})`);
  }
  const { jsonSchemaOf } = await import('./json-schema.js');
  const json = jsonSchemaOf(await entry.schema());
  return `${JSON.stringify({ ...json, title: `cqp: ${entry.title}` }, null, 2)}\n`;
}
