import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { encodeHeader, encodeRecord, recordSize } from '../../src/log/format.js';
import { cqp } from '../helpers/cli.js';
import { tempDir } from './helpers.js';


// Ten records appended one minute apart from 2024-05-30T08:00Z, so that seq and time bounds compare.
const T0 = Date.parse('2024-05-30T08:00:00Z');
const timeOf = (seq: number): string => new Date(T0 + seq * 60_000).toISOString();

function tenMinuteLog(dir: string): void {
  const parts = [encodeHeader().header];
  for (let seq = 1; seq <= 10; seq++) {
    const data = JSON.stringify({ n: seq });
    const out = Buffer.alloc(recordSize(data.length));
    encodeRecord(out, 0, seq, T0 + seq * 60_000, undefined, 0, data, data.length);
    parts.push(out);
  }
  writeFileSync(join(dir, 'events.log'), Buffer.concat(parts));
}

/** Bounds that name no record, or a --from after the --until: each is refused naming the option. */
const REFUSED: Array<{ args: string[]; says: RegExp; onLog?: boolean }> = [
  { args: ['--until', '0'], says: /--until "0": there is no record 0/ },
  { args: ['--from', '-5'], says: /--from "-5": .*whole number/ },
  { args: ['--until', '1.5'], says: /--until "1.5": .*whole number/ },
  { args: ['--from', '2022-02-30'], says: /--from "2022-02-30": no such date/ },
  { args: ['--until', '2022-13-01'], says: /--until "2022-13-01": no such date/ },
  { args: ['--until', '2022-02-29T10:00:00Z'], says: /--until "2022-02-29T10:00:00Z": no such date/ },
  { args: ['--until', '2024-05-30T24:30:00Z'], says: /--until "2024-05-30T24:30:00Z": no such time/ },
  { args: ['--from', '7', '--until', '3'], says: /--from 7 is after --until 3/ },
  { args: ['--from', '2024-05-30T09:00:00Z', '--until', '2024-05-30T08:00:00Z'], says: /--from 2024-05-30T09:00:00Z is after --until 2024-05-30T08:00:00Z/ },
  { args: ['--from', '8', '--until', timeOf(3)], says: new RegExp(`--from 8 \\(appended ${timeOf(8)}\\) is after --until ${timeOf(3)}`), onLog: true },
  { args: ['--from', timeOf(8), '--until', '3'], says: new RegExp(`--from ${timeOf(8)} is after --until 3 \\(appended ${timeOf(3)}\\)`), onLog: true },
];

/** Bounds that are fine, with the records they select. */
const ACCEPTED: Array<{ args: string[]; seqs: number[] }> = [
  { args: ['--from', '3', '--until', timeOf(5)], seqs: [3, 4, 5] },
  { args: ['--from', timeOf(9), '--until', '10'], seqs: [9, 10] },
  { args: ['--from', '4', '--until', '4'], seqs: [4] },
  { args: ['--from', '0', '--until', '2'], seqs: [1, 2] },
  { args: ['--until', '2024-02-29'], seqs: [] },
  { args: ['--from', '9', '--until', '2030-01-01'], seqs: [9, 10] },
  // A --from past the end is not after --until; it just selects nothing.
  { args: ['--from', '50', '--until', timeOf(3)], seqs: [] },
];

describe('--from and --until', () => {
  test.each(REFUSED)('cqp log cat $args is refused with exit 2', ({ args, says }) => {
    const dir = tempDir();
    tenMinuteLog(dir);
    const r = cqp(['log', 'cat', 'events.log', ...args], { cwd: dir });
    expect(r.status, r.stderr).toBe(2);
    expect(r.stderr).toMatch(says);
    expect(r.stdout).toBe('');
  });

  test.each(ACCEPTED)('cqp log cat $args selects $seqs', ({ args, seqs }) => {
    const dir = tempDir();
    tenMinuteLog(dir);
    const r = cqp(['log', 'cat', 'events.log', ...args], { cwd: dir });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.split('\n').filter((l) => l !== '').map((l) => (JSON.parse(l) as { n: number }).n)).toEqual(seqs);
  });

  test.each(REFUSED)('cqp-source log and a --read-log sink refuse $args with exit 2, writing nothing', ({ args, says, onLog }) => {
    const dir = tempDir();
    tenMinuteLog(dir);
    const source = cqp(['log', '--path', 'events.log', ...args], { bin: 'source', cwd: dir });
    expect(source.status, `cqp-source log ${args.join(' ')}: ${source.stderr}`).toBe(2);
    expect(source.stderr).toMatch(says);
    expect(source.stdout).toBe('');
    const sink = cqp(['file', '--path', 'out.ndjson', '--read-log', 'events.log', ...args], { bin: 'sink', cwd: dir });
    expect(sink.status, `cqp-sink file --read-log ${args.join(' ')}: ${sink.stderr}`).toBe(2);
    expect(sink.stderr).toMatch(says);
    // Bounds of one kind are refused before the sink opens its file; a seq against a time needs the
    // log read first, and then the file may have been opened, but nothing is written to it.
    const out = join(dir, 'out.ndjson');
    if (!onLog) expect(existsSync(out)).toBe(false);
    else if (existsSync(out)) expect(readFileSync(out, 'utf8')).toBe('');
  });
});
