import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { Pump } from '../../src/supervisor/pump.js';

function sink(): { stream: PassThrough; text: () => string } {
  const stream = new PassThrough();
  let text = '';
  stream.setEncoding('utf8').on('data', (t: string) => (text += t));
  return { stream, text: () => text };
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('Pump', () => {
  it('forwards whole lines only, and the unfinished last line when the producer ended cleanly', async () => {
    const input = new PassThrough();
    const out = sink();
    let counted = 0;
    const pump = new Pump(input, [{ stream: out.stream }], { endTargets: true, count: (n) => (counted += n), cleanEnd: async () => true });
    input.write('{"a":1}\n{"b":');
    await tick();
    expect(out.text()).toBe('{"a":1}\n');
    input.end('2}\n{"c":3}');
    await pump.done;
    await tick();
    expect(out.text()).toBe('{"a":1}\n{"b":2}\n{"c":3}\n');
    expect(counted).toBe(3);
    expect(out.stream.writableEnded).toBe(true);
  });

  it('ends targets it is pointed at after its producer ended (a reload rewiring a stage that has died)', async () => {
    const input = new PassThrough();
    const first = sink();
    const pump = new Pump(input, [{ stream: first.stream }], { endTargets: true, cleanEnd: async () => true });
    input.end('{"a":1}\n');
    await pump.done;
    expect(first.stream.writableEnded).toBe(true);
    const later = sink();
    let told = 0;
    pump.retarget([{ stream: later.stream, ending: () => told++ }]);
    expect(later.stream.writableEnded).toBe(true);
    expect(told).toBe(1);
    expect(later.text()).toBe('');
  });

  it('drops an unfinished last line from a producer that died', async () => {
    const input = new PassThrough();
    const out = sink();
    const warnings: string[] = [];
    const pump = new Pump(input, [{ stream: out.stream }], { endTargets: true, cleanEnd: async () => false, warn: (m) => warnings.push(m) });
    input.end('{"a":1}\n{"b":');
    await pump.done;
    await tick();
    expect(out.text()).toBe('{"a":1}\n');
    expect(warnings[0]).toMatch(/unfinished last line of 5 bytes/);
  });

  it('holds between two lines and goes on to a new target without losing or repeating a byte', async () => {
    const input = new PassThrough();
    const first = sink();
    const second = sink();
    const pump = new Pump(input, [{ stream: first.stream }], { endTargets: true });
    input.write('1\n2\n3');
    await tick();
    pump.hold();
    input.write('\n4\n');
    await tick();
    input.write('5');
    await tick();
    expect(first.text()).toBe('1\n2\n');
    pump.retarget([{ stream: second.stream }]);
    pump.release();
    await tick();
    // What waited goes out at once, up to the unfinished line.
    expect(second.text()).toBe('3\n4\n');
    input.end('\n');
    await pump.done;
    await tick();
    expect(first.text()).toBe('1\n2\n');
    expect(second.text()).toBe('3\n4\n5\n');
  });

  it('keeps the last position it forwarded per source, and leaves targets open when told to', async () => {
    const input = new PassThrough();
    const out = sink();
    const pump = new Pump(input, [{ stream: out.stream }], { endTargets: false, trackPositions: true });
    input.write('{"a":1,"@cqp":"demo:1:7"}\n{"a":2,"@cqp":"demo:1:8"}\n');
    await tick();
    input.write('{"a":3,"@cqp":"file:x:1');
    await tick();
    input.write('0');
    await tick();
    // A line over three reads goes out whole, once, and its position is the one kept.
    input.end('0"}\n');
    await pump.done;
    await tick();
    expect(out.text()).toBe('{"a":1,"@cqp":"demo:1:7"}\n{"a":2,"@cqp":"demo:1:8"}\n{"a":3,"@cqp":"file:x:100"}\n');
    expect(pump.positions).toEqual({ 'demo:1': '8', 'file:x': '100' });
    expect(out.stream.writableEnded).toBe(false);
  });

  it('pauses its input while a target holds a quarter MiB unwritten, and resumes when it drains', async () => {
    const input = new PassThrough();
    const slow = new PassThrough({ highWaterMark: 16 });
    const pump = new Pump(input, [{ stream: slow }], { endTargets: true });
    input.write(`${'x'.repeat(200 * 1024)}\n`);
    await tick();
    expect(input.isPaused()).toBe(false);
    input.write(`${'y'.repeat(100 * 1024)}\n`);
    await tick();
    expect(input.isPaused()).toBe(true);
    slow.resume();
    await tick();
    expect(input.isPaused()).toBe(false);
    input.end();
    await pump.done;
  });
});
