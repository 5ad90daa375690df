import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { loadPipeline } from '../../src/supervisor/config.js';

const DIR = fileURLToPath(new URL('../../pipelines/', import.meta.url));
const files = readdirSync(DIR).filter((f) => f.endsWith('.yaml') && !f.endsWith('.test.yaml')); // NAME.test.yaml: the pipelines' tests (cqp test)

describe('example pipelines', () => {
  it('there are some', () => {
    expect(files).toEqual(expect.arrayContaining(['ice-creams.yaml', 'follow.yaml']));
  });
  it.each(files)('%s validates', (file) => {
    const plan = loadPipeline(join(DIR, file), {});
    expect(plan.sinks.length).toBeGreaterThan(0);
  });
  it('no two write the same file: each has its own log, database and output files', () => {
    // A store takes one writer: two shipped pipelines sharing a log refuse each other when both run.
    const written = files.flatMap((file) =>
      loadPipeline(join(DIR, file), {}).sinks.flatMap((s) => [s.options.path, s.options.db].filter((f): f is string => typeof f === 'string').map((f) => ({ file, f }))),
    );
    const owners = new Map<string, string>();
    const shared: string[] = [];
    for (const { file, f } of written) {
      const owner = owners.get(f);
      if (owner !== undefined && owner !== file) shared.push(`${f}: ${owner} and ${file}`);
      owners.set(f, file);
    }
    expect(shared).toEqual([]);
  });
  it('ice-creams.yaml: the views follow the log, paths resolve beside the file', () => {
    const plan = loadPipeline(join(DIR, 'ice-creams.yaml'), {});
    const views = plan.sinks.find((s) => s.type === 'sqlite');
    expect(views?.logInput?.path).toBe(join(DIR, 'data/events.log'));
    expect(views?.options.views).toBe(join(DIR, 'views/ice-creams.yaml'));
    expect(plan.source.options.count).toBe(20000);
  });
});
