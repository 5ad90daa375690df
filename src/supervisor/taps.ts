/**
 * The supervisor's side of `cqp tap`: clients of `GET /tap` (metrics.ts), what each wants, and the
 * fan-out of what the tapped components mirror (stage-mirror.ts) to them.
 *
 * Which process mirrors what for a component (a "tap point"):
 * - outputs of a source or stage: what that process writes (for a `run:` program, which has no control
 *   channel, the supervisor mirrors what it pumps from the program's stdout itself);
 * - inputs of a stage: the outputs of the one before it; inputs of a sink fed by the stages: the
 *   outputs of its `where` filter, or else of the last stage; a sink reading the log and the source
 *   have no inputs to tap, and sinks no outputs;
 * - errors of a component: what its error policy (and its `where` filter's) rejected, with the reason.
 *
 * Each client has a bounded buffer (its response's unsent bytes): what does not fit is dropped and
 * counted, so a tap that reads slowly never slows the pipeline. The stream is NDJSON, one line per
 * event: `{"component","at","event"}`, `{"component","at","reason","event"}` for a rejected one, and
 * `{"dropped","at"}` (the total dropped so far) whenever that total grows.
 */
import type { ServerResponse } from 'node:http';
import { compileExpression } from '../core/expression.js';
import { CqpError, messageOf } from '../core/errors.js';
import { POSITION_KEY, stripStamp } from '../core/position.js';
import type { ComponentMessage, TapRequest } from '../protocol.js';
import { StageMirror } from '../stage-mirror.js';
import type { ComponentStats, Context } from './context.js';
import type { StageProcess } from './process.js';

/** Unsent bytes a client may have before its events are dropped. */
const MAX_BUFFERED_BYTES = 256 * 1024;
/** How often a client hears the number of events it missed, when it grew (ms). */
const DROPS_EVERY_MS = 250;
/**
 * How often, while someone taps, the processes are checked for what they were told: a process that a
 * reload or a restart put in place since is told then (at its ready it may not be in the pipeline yet).
 */
const RECHECK_MS = 500;
export const DEFAULT_TAP_LIMIT = 100;

/** What a client asked for (the query of `GET /tap`). */
export interface TapQuery {
  outputsOf: string[];
  inputsOf: string[];
  errorsOf: string[];
  where: string | undefined;
  /** Events per second at most. */
  limit: number;
}

/** One process whose mirror a client listens to, and the component the events are shown under. */
interface Subscription {
  proc: string;
  kind: 'outputs' | 'errors';
  component: string;
}

/** `GET /tap`'s query, or a CqpError (USAGE) saying which parameter is wrong. */
export function parseTapQuery(params: URLSearchParams): TapQuery {
  const limitText = params.get('limit');
  const limit = limitText === null ? DEFAULT_TAP_LIMIT : Number(limitText);
  if (!Number.isInteger(limit) || limit < 1) throw new CqpError('USAGE', `limit: expected a whole number of events per second (1 or more), got "${limitText}"`);
  const query = { outputsOf: params.getAll('outputs-of'), inputsOf: params.getAll('inputs-of'), errorsOf: params.getAll('errors-of'), where: params.get('where') ?? undefined, limit };
  if (query.outputsOf.length + query.inputsOf.length + query.errorsOf.length === 0) {
    throw new CqpError('USAGE', 'say what to tap: outputs-of, inputs-of or errors-of (a component name or a glob such as "enrich*")');
  }
  if (query.where !== undefined) compileExpression(query.where, 'where');
  return query;
}

/** A glob (`*` any characters, `?` one) as a test on names. */
function globTest(glob: string): (name: string) => boolean {
  const re = new RegExp(`^${glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`);
  return (name) => re.test(name);
}

/** Where a component's outputs, inputs and errors can be tapped (see the top of this file); the names are process names. */
function tapPoints(ctx: Context): { names: string[]; outputs: Map<string, string>; inputs: Map<string, string[]>; errors: Map<string, string[]> } {
  const outputs = new Map<string, string>();
  const inputs = new Map<string, string[]>();
  const errors = new Map<string, string[]>();
  const plans = [ctx.plan.source, ...ctx.plan.stages];
  const chain = plans.map((p) => p.name);
  plans.forEach(({ name, command }, i) => {
    outputs.set(name, name);
    if (i > 0) inputs.set(name, [chain[i - 1] as string]);
    // A `run:` program has no error policy of ours to report what it rejects.
    if (command.signalsReady === true) errors.set(name, [name]);
  });
  const last = chain.at(-1) as string;
  for (const sink of ctx.plan.sinks) {
    const where = sink.whereCommand ? `${sink.name}:where` : undefined;
    // A sink that reads the log itself has no control channel: nothing of it can be tapped.
    if (sink.logInput) continue;
    inputs.set(sink.name, [where ?? last]);
    errors.set(sink.name, where ? [sink.name, where] : [sink.name]);
  }
  return { names: [...chain, ...ctx.plan.sinks.map((s) => s.name)], outputs, inputs, errors };
}

/** What a query listens to; a glob that matches no component (or none with what it asks) is a USAGE error. */
function subscriptions(ctx: Context, query: TapQuery): Subscription[] {
  const points = tapPoints(ctx);
  const subs: Subscription[] = [];
  const add = (option: string, globs: string[], find: (name: string) => Subscription[]): void => {
    for (const glob of globs) {
      const test = globTest(glob);
      const found = points.names.filter(test).flatMap(find);
      if (found.length === 0) {
        const which = points.names.filter(test);
        const why = which.length === 0 ? `no component is named so (the components: ${points.names.join(', ')})` : `${which.join(', ')} ${which.length === 1 ? 'has' : 'have'} none to tap`;
        throw new CqpError('USAGE', `${option} "${glob}": ${why}`);
      }
      subs.push(...found);
    }
  };
  add('outputs-of', query.outputsOf, (name) => {
    const proc = points.outputs.get(name);
    return proc === undefined ? [] : [{ proc, kind: 'outputs', component: name }];
  });
  add('inputs-of', query.inputsOf, (name) => (points.inputs.get(name) ?? []).map((proc) => ({ proc, kind: 'outputs', component: name })));
  add('errors-of', query.errorsOf, (name) => (points.errors.get(name) ?? []).map((proc) => ({ proc, kind: 'errors', component: name })));
  return subs;
}

/** One `GET /tap` stream. */
class TapClient {
  dropped = 0;
  private shownDrops = 0;
  private windowStart = 0;
  private inWindow = 0;
  private readonly where: ((e: unknown) => unknown) | undefined;
  private readonly timer: NodeJS.Timeout;

  constructor(
    readonly res: ServerResponse,
    readonly query: TapQuery,
    readonly subs: Subscription[],
  ) {
    this.where = query.where === undefined ? undefined : compileExpression(query.where, 'where').fn;
    this.timer = setInterval(() => this.tellDrops(), DROPS_EVERY_MS);
    this.timer.unref();
  }

  /**
   * Offers events (their JSON text) to the client, written in one go; `reasons`: they were rejected,
   * for these reasons.
   */
  offer(component: string, texts: string[], reasons?: string[]): void {
    const now = Date.now();
    if (now - this.windowStart >= 1000) {
      this.windowStart = now;
      this.inWindow = 0;
    }
    const head = `{"component":${JSON.stringify(component)},"at":${JSON.stringify(new Date(now).toISOString())}`;
    let out = '';
    for (let i = 0; i < texts.length; i++) {
      const text = texts[i] as string;
      if (!this.passes(text)) continue;
      if (this.inWindow >= this.query.limit) break;
      if (this.res.writableLength + out.length > MAX_BUFFERED_BYTES) {
        this.dropped++;
        continue;
      }
      this.inWindow++;
      const reason = reasons?.[i];
      out += `${head}${reason === undefined ? '' : `,"reason":${JSON.stringify(reason)}`},"event":${text}}\n`;
    }
    if (out !== '') this.res.write(out);
  }

  /** Whether --where keeps the event. */
  private passes(text: string): boolean {
    if (!this.where) return true;
    try {
      return Boolean(this.where(JSON.parse(text)));
    } catch {
      // An event the expression cannot judge (or a rejected line that is no JSON) is not shown.
      return false;
    }
  }

  tellDrops(): void {
    if (this.dropped === this.shownDrops || this.res.destroyed) return;
    this.shownDrops = this.dropped;
    this.res.write(`{"dropped":${this.dropped},"at":${JSON.stringify(new Date().toISOString())}}\n`);
  }

  end(): void {
    clearInterval(this.timer);
    this.tellDrops();
    this.res.end();
  }
}

/** The event text a tap shows for a mirrored line: without the position stamp the stages carry. */
function eventText(line: string): string {
  if (!line.includes(`"${POSITION_KEY}"`)) return line;
  try {
    return stripStamp(line, JSON.parse(line) as object);
  } catch {
    return line;
  }
}

/** A rejected line as JSON: the event when it is JSON, else the line as a string. */
function rejectedText(line: string): string {
  try {
    JSON.parse(line);
    return eventText(line);
  } catch {
    return JSON.stringify(line);
  }
}

const OFF: TapRequest = { outputs: 0, errors: false };

/** The tap clients of one supervisor, and what each process was last told to mirror. */
export class Taps {
  private readonly clients = new Set<TapClient>();
  private readonly told = new WeakMap<StageProcess, string>();
  /** The supervisor's own mirrors, of the `run:` programs' output it pumps, by stage name. */
  private readonly pumped = new Map<string, StageMirror>();
  private recheck: NodeJS.Timeout | undefined;

  constructor(private readonly ctx: Context) {}

  /** Starts streaming to `res` what `query` asks for (a USAGE error when it names nothing to tap). */
  open(query: TapQuery, res: ServerResponse): void {
    const client = new TapClient(res, query, subscriptions(this.ctx, query));
    res.writeHead(200, { 'content-type': 'application/x-ndjson' });
    res.flushHeaders();
    this.clients.add(client);
    res.on('close', () => {
      this.clients.delete(client);
      client.end();
      this.refresh();
    });
    this.refresh();
    if (!this.recheck) {
      this.recheck = setInterval(() => this.refresh(), RECHECK_MS);
      this.recheck.unref();
    }
  }

  /** Ends every tap stream (the pipeline has stopped). */
  close(): void {
    for (const client of this.clients) client.end();
    this.clients.clear();
    clearInterval(this.recheck);
    this.recheck = undefined;
  }

  /** What the process named `proc` is to mirror for the clients now. */
  private requestFor(proc: string): TapRequest {
    let outputs: TapRequest['outputs'] = 0;
    let errors = false;
    for (const client of this.clients) {
      for (const sub of client.subs) {
        if (sub.proc !== proc) continue;
        if (sub.kind === 'errors') errors = true;
        else if (client.query.where !== undefined) outputs = 'all';
        else if (outputs !== 'all') outputs = Math.max(outputs, client.query.limit);
      }
    }
    return outputs === 0 && !errors ? OFF : { outputs, errors };
  }

  /** Tells each running cqp process what to mirror, where that changed (a client came or went, a process started). */
  refresh(): void {
    if (this.clients.size === 0 && this.recheck) {
      clearInterval(this.recheck);
      this.recheck = undefined;
    }
    const procs: Array<[string, StageProcess]> = this.ctx.chain().map((n) => [n.plan.name, n.proc]);
    for (const unit of this.ctx.units.values()) {
      procs.push([unit.plan.name, unit.sink]);
      if (unit.where) procs.push([`${unit.plan.name}:where`, unit.where]);
    }
    for (const [name, mirror] of this.pumped) mirror.tap(this.requestFor(name));
    for (const [name, proc] of procs) {
      // Told once it listens (ready): a message sent before is lost; wiring.ts refreshes at its ready.
      if (!proc.controlled || !proc.running || !proc.wasReady) continue;
      const request = this.requestFor(name);
      const text = JSON.stringify(request);
      if ((this.told.get(proc) ?? JSON.stringify(OFF)) === text) continue;
      this.told.set(proc, text);
      void proc.request({ cqp: 'tap', ...request });
    }
  }

  /**
   * For the pump of a `run:` stage's output: the function to give what it forwards while the stage is
   * tapped (undefined otherwise, so an untapped pump copies nothing).
   */
  pumpMirror(name: string, stats: ComponentStats): () => ((text: string) => void) | undefined {
    let mirror = this.pumped.get(name);
    if (!mirror) {
      mirror = new StageMirror((message) => {
        if (message.cqp === 'tapped') {
          stats.mirrored += message.outputs.length;
          this.publish(name, message);
        }
        return Promise.resolve();
      });
      this.pumped.set(name, mirror);
      mirror.tap(this.requestFor(name));
    }
    const m = mirror;
    const give = (text: string): void => m.output(text);
    return () => (m.outputs ? give : undefined);
  }

  /** Hands what the process named `proc` mirrored to the clients listening to it. */
  publish(proc: string, message: Extract<ComponentMessage, { cqp: 'tapped' }>): void {
    for (const client of this.clients) {
      const subs = client.subs.filter((s) => s.proc === proc);
      if (subs.length > 0) client.dropped += message.dropped;
      for (const sub of subs) {
        try {
          if (sub.kind === 'outputs') client.offer(sub.component, message.outputs.map(eventText));
          else client.offer(sub.component, message.errors.map((e) => rejectedText(e.line)), message.errors.map((e) => e.reason));
        } catch (error) {
          this.ctx.log(`cqp: tap: ${messageOf(error)}`);
        }
      }
    }
  }
}
