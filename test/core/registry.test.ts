import { describe, expect, it } from 'vitest';
import { optionSpecs, optionsToArgv, parseOptions } from '../../src/core/options.js';
import { componentFiles } from '../../src/components.js';
import { registry } from '../../src/core/registry.js';

const all = Object.values(registry).flat();

describe('the component registry', () => {
  it.each(all.map((c) => [`${c.kind} ${c.name}`, c] as const))('%s: summary, described options, examples that parse', (_name, c) => {
    expect(c.summary.length).toBeGreaterThan(10);
    for (const spec of optionSpecs(c.options)) expect(spec.description, `${c.name} --${spec.key}`).not.toBe('');
    expect(c.examples.length).toBeGreaterThan(0);
    for (const example of c.examples) {
      const parsed = parseOptions(c, example as Record<string, unknown>, 'example');
      // The YAML spelling and the CLI spelling are the same options.
      expect(optionsToArgv(c, parsed).every((a) => typeof a === 'string')).toBe(true);
    }
  });

  it('declares checks only for options it has (what cqp lint runs for a file or piece of code an option names)', () => {
    for (const c of all) {
      const keys = optionSpecs(c.options).map((s) => s.key);
      for (const key of Object.keys(c.checks ?? {})) expect(keys, `${c.kind} ${c.name} checks ${key}`).toContain(key);
    }
    expect(all.filter((c) => c.checks !== undefined).map((c) => c.name).sort()).toEqual(['enrich', 'map', 'module', 'postgres', 'sqlite', 'validate', 'where']);
  });

  it('files each one component, of the kind and under the name they are listed as (the bins load a component by that name)', async () => {
    for (const [kind, files] of Object.entries(componentFiles)) {
      for (const [name, load] of Object.entries(files)) expect((await load()).default, `${kind} ${name}`).toMatchObject({ kind, name });
    }
  });

  it('names are unique per kind and kebab-case', () => {
    for (const list of Object.values(registry)) {
      const names = list.map((c) => c.name);
      expect(new Set(names).size).toBe(names.length);
      for (const n of names) expect(n).toMatch(/^[a-z][a-z0-9-]*$/);
    }
  });

  it('rejects unknown and ill-typed options with the flag name', () => {
    const dedupe = registry.filter.find((c) => c.name === 'dedupe');
    expect(dedupe).toBeDefined();
    if (!dedupe) return;
    expect(() => parseOptions(dedupe, { windw: 3 }, 'x')).toThrow('unknown option "windw"');
    expect(() => parseOptions(dedupe, { window: 'many' }, 'x')).toThrow('--window');
    expect(parseOptions(dedupe, { window: '5' }, 'x')).toMatchObject({ window: 5 });
  });
});
