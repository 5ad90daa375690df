import { Option } from 'commander';
import type { z } from 'zod';
import { CqpError } from './errors.js';
import type { ComponentDefinition } from './component.js';

/** What the CLI needs to know of one option, read off its zod schema. */
export interface OptionSpec {
  key: string;
  flag: string;
  type: 'string' | 'number' | 'boolean' | 'enum' | 'list';
  choices: string[];
  description: string;
  required: boolean;
  defaultValue: unknown;
}

interface ZodInternals {
  _zod: { def: { type: string; innerType?: z.ZodType; defaultValue?: unknown; entries?: Record<string, string> } };
  description?: string;
}

/** camelCase → kebab-case (`maxLineBytes` → `max-line-bytes`). */
export function kebab(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** Reads the option specs of a zod object schema, in declaration order. */
export function optionSpecs(schema: z.ZodObject): OptionSpec[] {
  return Object.entries(schema.shape).map(([key, field]) => {
    let t = field as unknown as ZodInternals;
    let description = t.description ?? '';
    let required = true;
    let defaultValue: unknown;
    while (t._zod.def.innerType) {
      if (t._zod.def.type === 'optional') required = false;
      if (t._zod.def.type === 'default') {
        required = false;
        defaultValue = t._zod.def.defaultValue;
      }
      t = t._zod.def.innerType as unknown as ZodInternals;
      description ||= t.description ?? '';
    }
    const base = t._zod.def.type;
    const type: OptionSpec['type'] =
      base === 'number' || base === 'int' ? 'number'
      : base === 'boolean' ? 'boolean'
      : base === 'enum' ? 'enum'
      : base === 'array' ? 'list'
      : 'string';
    const choices = type === 'enum' ? Object.values(t._zod.def.entries ?? {}) : [];
    return { key, flag: `--${kebab(key)}`, type, choices, description, required, defaultValue };
  });
}

/** Commander options for a schema, so `--help` is generated from the same schema YAML validates. */
export function commanderOptions(schema: z.ZodObject, positional?: string): Option[] {
  return optionSpecs(schema).map((spec) => {
    const value = spec.type === 'boolean' ? '' : spec.type === 'list' ? ' <value...>' : ' <value>';
    const o = new Option(`${spec.flag}${value}`, spec.description + (spec.key === positional ? ' (or the first argument)' : ''));
    if (spec.type === 'enum') o.choices(spec.choices);
    if (spec.type === 'list') o.argParser((v: string, prev: unknown) => [...(Array.isArray(prev) ? prev : []), v]);
    if (spec.defaultValue !== undefined && !(Array.isArray(spec.defaultValue) && spec.defaultValue.length === 0)) {
      o.default(spec.defaultValue);
    }
    return o;
  });
}

/**
 * Validates raw option values (from commander or a YAML `with:` block) against a component's schema.
 * Numbers given as strings on the command line are converted first.
 */
export function parseOptions(def: ComponentDefinition, raw: Record<string, unknown>, where: string): Record<string, unknown> {
  const specs = optionSpecs(def.options);
  const known = new Set(specs.map((s) => s.key));
  const input: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(raw)) {
    if (value === undefined) continue;
    if (!known.has(key)) {
      throw new CqpError('USAGE', `${where}: unknown option "${key}" for ${def.kind} ${def.name} (options: ${[...known].join(', ') || 'none'})`);
    }
    const spec = specs.find((s) => s.key === key) as OptionSpec;
    input[key] = spec.type === 'number' && typeof value === 'string' && value.trim() !== '' && !Number.isNaN(Number(value)) ? Number(value) : value;
  }
  // A missing option is named as the user spells it, not in the validator's words ("expected string, received undefined").
  const missing = specs.find((s) => s.required && input[s.key] === undefined);
  if (missing) {
    throw new CqpError('USAGE', `${where}: ${def.kind} ${def.name}: ${missing.flag} is required${missing.description ? ` (${missing.description})` : ''}`);
  }
  const result = def.options.safeParse(input);
  if (!result.success) {
    const issue = result.error.issues[0];
    const key = String(issue?.path[0] ?? '');
    const name = key ? `--${kebab(key)}` : 'options';
    throw new CqpError('USAGE', `${where}: ${def.kind} ${def.name}: ${name}: ${issue?.message ?? 'invalid'}`);
  }
  return result.data as Record<string, unknown>;
}

/** The command line that gives a component these options: YAML `with:` → argv (one spelling everywhere). */
export function optionsToArgv(def: ComponentDefinition, options: Record<string, unknown>): string[] {
  const argv: string[] = [];
  for (const spec of optionSpecs(def.options)) {
    const value = options[spec.key];
    if (value === undefined || value === null) continue;
    if (spec.type === 'boolean') {
      if (value === true) argv.push(spec.flag);
      continue;
    }
    if (Array.isArray(value)) {
      for (const v of value) argv.push(spec.flag, String(v));
      continue;
    }
    argv.push(spec.flag, typeof value === 'object' ? JSON.stringify(value) : String(value));
  }
  return argv;
}
