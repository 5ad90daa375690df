/**
 * Runs one pipeline test: the pipeline's own components, in this process with the code their processes
 * run (`run:` programs spawned as `cqp run` spawns them), one after the other over the test's events.
 * Every store a sink keeps is a temporary one; sinks that publish outside cqp are not run, and what
 * reaches them is captured.
 */
import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { basename, join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { readComponentCommand, type ComponentCall } from '../component-cli.js';
import { componentFiles } from '../components.js';
import type { JsonObject, SinkDefinition } from '../core/component.js';
import { CqpError, messageOf } from '../core/errors.js';
import { parseOptions } from '../core/options.js';
import { POSITION_KEY } from '../core/position.js';
import { runFilter, runSink, type RuntimeOptions, type StageIo } from '../core/runtime.js';
import { isUrl } from '../supervisor/config.js';
import type { Command, PipelinePlan } from '../supervisor/plan.js';
import type { LoadedTest } from './load.js';

/** What came out where, and the SQLite database each views sink wrote. */
export interface TestRun {
  outputs: Map<string, JsonObject[]>;
  databases: Map<string, string>;
  /** What the components warned about (bad events skipped, say), each under its name. */
  warnings: string[];
}

/** Which component a test run is in, for the message when the test takes too long. */
export interface RunProgress {
  component: string;
}

interface RunContext {
  plan: PipelinePlan;
  tmp: string;
  signal: AbortSignal;
  warnings: string[];
}

/** Runs `loaded`'s events through `plan` with stores under `tmp`; `signal` stops the components (and kills programs). */
export async function runPipelineTest(plan: PipelinePlan, loaded: LoadedTest, tmp: string, signal: AbortSignal, progress: RunProgress = { component: '' }): Promise<TestRun> {
  const ctx: RunContext = { plan, tmp, signal, warnings: [] };
  const outputs = new Map<string, JsonObject[]>();
  const databases = new Map<string, string>();
  let flow = loaded.inserted.get(plan.source.name) ?? '';
  for (const stage of plan.stages) {
    const input = flow + (loaded.inserted.get(stage.name) ?? '');
    progress.component = `stage ${stage.name}`;
    flow = stage.filter === undefined ? await programOutput(stage.name, stage.command, input, ctx) : await filterOutput(stage.name, stage.command, input, ctx);
    outputs.set(stage.name, parseEvents(stage.name, flow));
  }
  const calls = new Map<string, ComponentCall & { def: SinkDefinition }>();
  const stores = new Map<string, string>();
  for (const sink of plan.sinks) {
    const call = await readComponentCommand(sink.command.args.slice(1), componentFiles);
    const def = call.def;
    if (def.kind !== 'sink') throw new CqpError('CONFIG', `${sink.name}: ${def.name} is not a sink`);
    const store = def.store;
    const onServer = sink.store !== undefined && isUrl(sink.store);
    calls.set(sink.name, { ...call, def });
    if (!store || def.external || def.writesStdout || (onServer && !store.commandLog)) continue;
    const dir = join(tmp, sink.name);
    mkdirSync(dir, { recursive: true });
    const temp = join(dir, onServer || sink.store === undefined ? 'store' : basename(sink.store));
    stores.set(sink.name, temp);
    // A command log on a server is kept in a temporary file instead, so that the sinks following it read
    // it; the options that describe the server (partitions, say) do not apply to the file.
    if (onServer) calls.set(sink.name, { ...call, def, options: parseOptions(def, { [store.option]: temp }, sink.name) });
    if (store.sqlite) databases.set(sink.name, temp);
  }
  const logSink = plan.sinks.find((s) => calls.get(s.name)?.def.store?.commandLog === true);
  const followers = plan.sinks.filter((s) => s.logInput !== undefined);
  for (const sink of plan.sinks.filter((s) => s.logInput === undefined)) {
    progress.component = `sink ${sink.name}`;
    const input = sink.whereCommand ? await filterOutput(`${sink.name} (where)`, sink.whereCommand, flow, ctx) : flow;
    outputs.set(sink.name, parseEvents(sink.name, input));
    const store = stores.get(sink.name);
    if (store !== undefined) await sinkRun(sink.name, calls.get(sink.name), store, input, undefined, ctx);
  }
  for (const sink of followers) {
    progress.component = `sink ${sink.name}`;
    const log = logSink ? stores.get(logSink.name) : undefined;
    const store = stores.get(sink.name);
    const events = logSink ? (outputs.get(logSink.name) ?? []) : [];
    outputs.set(sink.name, events);
    // The log holds what this test appended, seq 1 to N: a read bounded there is done beside the sink,
    // not on the thread an unbounded read starts.
    if (store !== undefined && log !== undefined) await sinkRun(sink.name, calls.get(sink.name), store, '', { path: log, follow: false, until: String(Math.max(1, events.length)) }, ctx);
  }
  return { outputs, databases, warnings: ctx.warnings };
}

/** The events of NDJSON `text` that `name` wrote, without their position stamps. */
function parseEvents(name: string, text: string): JsonObject[] {
  return text
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line, i) => {
      let event: unknown;
      try {
        event = JSON.parse(line);
      } catch (error) {
        throw new CqpError('STAGE', `${name} wrote line ${i + 1}, which is not JSON (${messageOf(error)}): ${line.slice(0, 200)}`);
      }
      if (event === null || typeof event !== 'object' || Array.isArray(event)) throw new CqpError('STAGE', `${name} wrote line ${i + 1}, which is not a JSON object: ${line.slice(0, 200)}`);
      delete (event as JsonObject)[POSITION_KEY];
      return event as JsonObject;
    });
}

/** A stream that keeps what is written to it. */
function collector(): { stream: Writable; text: () => string } {
  const chunks: Buffer[] = [];
  const stream = new Writable({
    write(chunk: Buffer | string, _encoding, done) {
      chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
      done();
    },
  });
  return { stream, text: () => Buffer.concat(chunks).toString('utf8') };
}

function stageIo(name: string, input: string, output: Writable, ctx: RunContext): StageIo {
  return {
    input: Readable.from(input === '' ? [] : [Buffer.from(input)]),
    output,
    warn: (message) => ctx.warnings.push(`[${name}] ${message}`),
    signal: ctx.signal,
    cwd: ctx.plan.dir,
  };
}

/** The runtime options with a dead-letter file moved into the test's temporary folder. */
function aside(name: string, runtime: RuntimeOptions, ctx: RunContext): RuntimeOptions {
  return runtime.deadLetter === undefined ? runtime : { ...runtime, deadLetter: join(ctx.tmp, `${name.replace(/\W+/g, '-')}.dead-letter.ndjson`) };
}

/** Runs a built-in filter (a stage, or the `where` in front of a sink) over `input`; returns what it writes. */
async function filterOutput(name: string, command: Command, input: string, ctx: RunContext): Promise<string> {
  const out = collector();
  try {
    const { def, options, runtime } = await readComponentCommand(command.args.slice(1), componentFiles);
    if (def.kind !== 'filter') throw new CqpError('CONFIG', `${def.name} is not a filter`);
    await runFilter(def, options, aside(name, runtime, ctx), stageIo(name, input, out.stream, ctx));
  } catch (error) {
    throw new CqpError('STAGE', `${name} failed: ${messageOf(error)}`, { cause: error });
  }
  return out.text();
}

/** Runs a `run:` program over `input` in the pipeline's folder, as `cqp run` starts it; returns what it writes. */
function programOutput(name: string, command: Command, input: string, ctx: RunContext): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command.file, command.args, { cwd: ctx.plan.dir, stdio: ['pipe', 'pipe', 'pipe'], signal: ctx.signal, killSignal: 'SIGKILL' });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    child.stdin.on('error', () => undefined);
    child.on('error', (error) => reject(new CqpError('STAGE', `${name}: cannot start ${command.file}: ${messageOf(error)}`)));
    child.on('close', (code, signal) => {
      if (code === 0) resolve(Buffer.concat(out).toString('utf8'));
      else reject(new CqpError('STAGE', `${name} failed: ${command.file} ended with ${signal ?? `exit code ${code}`}${err.length ? `: ${Buffer.concat(err).toString('utf8').trim()}` : ''}`));
    });
    child.stdin.end(input);
  });
}

/** Runs a sink on its temporary store, from `input` or from the command log `readLog` names. */
async function sinkRun(name: string, call: (ComponentCall & { def: SinkDefinition }) | undefined, store: string, input: string, readLog: RuntimeOptions['readLog'], ctx: RunContext): Promise<void> {
  const option = call?.def.store?.option;
  if (!call || option === undefined) throw new CqpError('STAGE', `sink ${name} keeps no store`);
  const settings: RuntimeOptions = { ...aside(name, call.runtime, ctx), ...(readLog === undefined ? {} : { readLog }) };
  try {
    await runSink(call.def, { ...call.options, [option]: store }, settings, stageIo(name, input, collector().stream, ctx));
  } catch (error) {
    throw new CqpError('STAGE', `sink ${name} failed: ${messageOf(error)}`, { cause: error });
  }
}

