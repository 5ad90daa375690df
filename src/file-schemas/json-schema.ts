import { toJSONSchema, type ZodType } from 'zod';

/**
 * The JSON Schema (draft 2020-12) of a file's zod schema. Apart from kinds.ts, which loads it with
 * import() when `cqp schema` asks: an import() of zod itself would need all of zod in every bundle
 * (see eslint.config.js).
 */
export function jsonSchemaOf(schema: ZodType): Record<string, unknown> {
  return toJSONSchema(schema, {
    target: 'draft-2020-12',
    // What the file holds, before defaults fill it in: a key with a default may be left out.
    io: 'input',
    // A type with no JSON Schema form is left open rather than failing the command; checks written in code
    // (a dot path that parses, an action word) have none either: cqp run and cqp lint still make them.
    unrepresentable: 'any',
    override: ({ jsonSchema }) => {
      // cqp's own marks on options (`path`), not JSON Schema keywords.
      delete (jsonSchema as Record<string, unknown>).path;
    },
  });
}
