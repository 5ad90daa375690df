/** What a group's worker says to and hears from `cqp run`, and how its partitions are shown. */
import { describe, expect, test } from 'vitest';
import { componentMessage, supervisorMessage } from '../../src/protocol.js';
import { holdingText, statusLine, Rates } from '../../src/supervisor/status.js';

describe('group worker messages', () => {
  test('sinks-at and holding from a component; the answer from the supervisor; anything malformed is no message', () => {
    expect(componentMessage({ cqp: 'sinks-at', id: '3' })).toEqual({ cqp: 'sinks-at', id: '3' });
    expect(componentMessage({ cqp: 'sinks-at' })).toBeUndefined();
    expect(componentMessage({ cqp: 'holding', group: 'views', partitions: [0, 3, 'x', 1.5, 7] })).toEqual({ cqp: 'holding', group: 'views', partitions: [0, 3, 7] });
    expect(componentMessage({ cqp: 'holding', partitions: [1] })).toBeUndefined();
    expect(supervisorMessage({ cqp: 'sinks-at', id: '3', at: { 'log:ab/p1': '42' } })).toEqual({ cqp: 'sinks-at', id: '3', at: { 'log:ab/p1': '42' } });
    expect(supervisorMessage({ cqp: 'sinks-at', id: '3', at: null })).toEqual({ cqp: 'sinks-at', id: '3', at: null });
    expect(supervisorMessage({ cqp: 'sinks-at', id: '3', at: { p: 1 } })).toBeUndefined();
  });

  test('the partitions held, as the status table and lines show them', () => {
    expect(holdingText({})).toBeUndefined();
    expect(holdingText({ group: 'views', partitions: [] })).toBe('group views: no partition held');
    expect(holdingText({ group: 'views', partitions: [2] })).toBe('group views: partition 2');
    expect(holdingText({ group: 'views', partitions: [0, 3, 5] })).toBe('group views: partitions 0, 3, 5');
    const source = { name: 'source', kind: 'source' as const, pid: 1, generation: 1, in: 0, out: 5, errors: 0, mirrored: 0, restarts: 0, heardAt: undefined };
    expect(statusLine([source], new Rates(), { ok: 0, failed: 0 }, { group: 'views', partitions: [1, 4] })).toBe('cqp: source out=5 | reloads 0 ok 0 failed | group views: partitions 1, 4');
  });
});
