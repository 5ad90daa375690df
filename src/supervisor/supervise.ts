import { reportError } from '../core/errors.js';
import type { Supervisor } from './supervisor.js';

/** Signals a command handles while its supervisor runs, each with its handler. */
export type SignalHandlers = Partial<Record<NodeJS.Signals, (signal: NodeJS.Signals) => void>>;

/**
 * What `cqp run` and `cqp replay` share around their supervisor: `body` starts it and waits for its
 * result, under the command's signal handlers. Stages run in their own process group, so a supervisor
 * process that exits takes them with it; a failure of the command itself kills every stage and is
 * reported, and its exit code is the result.
 */
export async function supervise(supervisor: Supervisor, signals: SignalHandlers, body: () => Promise<number>): Promise<number> {
  const onExit = (): void => supervisor.killRemaining();
  const handled = Object.entries(signals) as Array<[NodeJS.Signals, (signal: NodeJS.Signals) => void]>;
  process.on('exit', onExit);
  for (const [signal, handler] of handled) process.on(signal, handler);
  try {
    return await body();
  } catch (error) {
    supervisor.killAll(1);
    await supervisor.result;
    return reportError(error);
  } finally {
    for (const [signal, handler] of handled) process.off(signal, handler);
    process.off('exit', onExit);
  }
}
