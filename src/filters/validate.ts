import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import * as z from 'zod';
import { KEEP, defineFilter } from '../core/component.js';
import { CqpError, messageOf } from '../core/errors.js';
import { envelopeSchema } from '../schemas/envelope.js';

function loadSchema(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new CqpError('CONFIG', `--schema ${file}: cannot read it (${messageOf(error)})`);
  }
  try {
    const schema: unknown = JSON.parse(text);
    if (typeof schema !== 'object' || schema === null) throw new Error('a JSON Schema is an object');
    return schema as Record<string, unknown>;
  } catch (error) {
    throw new CqpError('CONFIG', `--schema ${file}: not a JSON Schema file: ${messageOf(error)}`);
  }
}

/** Reads and compiles the schema (the built-in envelope when none is given): the check, and why the last event failed it. */
async function compileSchema(schema: string | undefined, cwd: string): Promise<{ valid: (e: unknown) => boolean; why: () => string }> {
  const json: Record<string, unknown> = schema ? loadSchema(resolve(cwd, schema)) : { ...envelopeSchema };
  const is2020 = typeof json.$schema === 'string' && json.$schema.includes('2020-12');
  const { default: Ajv } = is2020 ? await import('ajv/dist/2020.js') : await import('ajv');
  const { default: addFormats } = await import('ajv-formats');
  const ajv = new Ajv({ allErrors: true, strict: false });
  (addFormats as unknown as (a: typeof ajv) => void)(ajv);
  let check: ReturnType<typeof ajv.compile>;
  try {
    check = ajv.compile(json);
  } catch (error) {
    throw new CqpError('CONFIG', `--schema ${schema ?? 'envelope'}: the schema does not compile: ${messageOf(error)}`);
  }
  // Each error as `/header/eventId must be string`; one at the top level has no path (no leading space).
  const why = (): string => (check.errors ?? []).map((err) => `${err.instancePath ? `${err.instancePath} ` : ''}${err.message ?? 'is invalid'}`).join('; ');
  return { valid: check, why };
}

export default defineFilter({
  name: 'validate',
  summary: 'check events against a JSON Schema file, or the built-in event envelope',
  description:
    'Valid events are forwarded as their original bytes. Invalid ones follow --on-error, with the schema ' +
    'errors in the message (e.g. "/header/eventId must be string"). Without --schema the built-in envelope ' +
    'is checked: header.eventId, eventType[], eventName[], createdTimestamp, rel.id, ' +
    'rel.schemaVersion and an object payload. Draft-07 and 2020-12 schemas are supported.',
  options: z.object({
    schema: z.string().optional().describe('JSON Schema file (default: the built-in envelope schema)'),
  }),
  // A schema checks numbers as numbers; valid events go out as their original bytes.
  plainNumbers: true,
  examples: [{}, { schema: 'schemas/ice-cream.json' }],
  reads: { schema: {} },
  checks: { schema: (schema, _options, ctx) => compileSchema(schema, ctx.cwd) },
  async create({ schema }, ctx) {
    const { valid, why } = await compileSchema(schema, ctx.cwd);
    return {
      process(e) {
        if (valid(e)) return KEEP;
        throw new Error(`invalid: ${why()}`);
      },
    };
  },
});
