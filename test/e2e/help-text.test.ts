import { describe, expect, it } from 'vitest';
import { componentNames } from '../../src/core/registry.js';
import { cqpAsync } from '../helpers/cli.js';

// What users read (--help of every command and component) never cites the design document: it is not in
// the repository, so a reference to one of its sections leads nowhere.
const CITES_DESIGN = /DESIGN|§/;

const commands: string[][] = [
  [],
  ['list'],
  ['log'],
  ['log', 'cat'],
  ['log', 'verify'],
  ['log', 'stat'],
  ['log', 'repair'],
  ['query'],
  ['run'],
  ['replay'],
  ['lint'],
  ['test'],
  ...(['filter', 'source', 'sink'] as const).flatMap((kind) => componentNames(kind).map((name) => [kind, name])),
];

describe('help text', () => {
  it.each(commands.map((c) => [c.join(' ') || '(no command)', c] as const))('cqp %s --help cites no design section', async (_label, args) => {
    const r = await cqpAsync(args[0] === 'list' ? ['list'] : [...args, '--help']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.length).toBeGreaterThan(0);
    expect(r.stdout + r.stderr).not.toMatch(CITES_DESIGN);
  });
});
