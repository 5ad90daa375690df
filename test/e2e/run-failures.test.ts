import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { runPipeline, tmpDir } from '../helpers/pipeline.js';

// `cqp run` ends with exit 1, saying why, when a component failed for good: nothing may look written that was not.
const VIEWS = fileURLToPath(new URL('../../pipelines/views/ice-creams.yaml', import.meta.url));

function pipeline(dir: string, out: string): string {
  const file = join(dir, 'p.yaml');
  writeFileSync(
    file,
    `source: { type: demo, count: 200 }
sinks:
  - { name: log, type: log, path: ${out}/events.log }
  - { name: views, type: sqlite, db: ${out}/views.db, views: ${VIEWS} }
`,
  );
  return file;
}

/** True when `chattr +i` works on `dir` (it needs CAP_LINUX_IMMUTABLE and a file system that has the flag). */
function makeImmutable(dir: string): boolean {
  return spawnSync('chattr', ['+i', dir]).status === 0;
}

describe('cqp run exit status', () => {
  it('exits 1 naming the sinks when their files cannot be opened (a path under a plain file)', async () => {
    const dir = tmpDir();
    writeFileSync(join(dir, 'plain'), 'not a folder\n');
    const p = runPipeline(pipeline(dir, 'plain'));
    expect(await p.exit, p.stderr()).toBe(1);
    expect(p.stderr()).toMatch(/log: 0 in/);
    expect(p.stderr()).toMatch(/^ {2}failed: log: exited with code 1: .*events\.log.*$/m);
  }, 120_000);

  it('exits 1 when the sinks\' folder is read-only', async (ctx) => {
    const dir = tmpDir();
    const out = join(dir, 'ro');
    mkdirSync(out);
    // Tests run as root here, and chmod does not stop root: an immutable folder does.
    if (!makeImmutable(out)) ctx.skip('chattr +i is not allowed here, so no folder is read-only to root');
    try {
      const p = runPipeline(pipeline(dir, 'ro'));
      expect(await p.exit, p.stderr()).toBe(1);
      expect(p.stderr()).toMatch(/^ {2}failed: log: exited with code 1: .*events\.log/m);
    } finally {
      spawnSync('chattr', ['-i', out]);
    }
  }, 120_000);
});
