import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { loadPipeline } from '../../src/supervisor/config.js';

const DIR = fileURLToPath(new URL('../../pipelines/', import.meta.url));
const files = readdirSync(DIR).filter((f) => f.endsWith('.yaml'));

describe('example pipelines', () => {
  it('there are some', () => {
    expect(files).toEqual(expect.arrayContaining(['ice-creams.yaml', 'follow.yaml']));
  });
  it.each(files)('%s validates', (file) => {
    const plan = loadPipeline(join(DIR, file), {});
    expect(plan.sinks.length).toBeGreaterThan(0);
  });
  it('ice-creams.yaml: the views follow the log, paths resolve beside the file', () => {
    const plan = loadPipeline(join(DIR, 'ice-creams.yaml'), {});
    const views = plan.sinks.find((s) => s.type === 'sqlite');
    expect(views?.logInput?.path).toBe(join(DIR, 'data/events.log'));
    expect(views?.options.views).toBe(join(DIR, 'views/ice-creams.yaml'));
    expect(plan.source.options.count).toBe(20000);
  });
});
