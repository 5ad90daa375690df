/** Finding the processes a test started that are still running, from /proc (Linux). */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { eventually } from './eventually.js';

/** Pids of processes whose command line names `folder` or that run in it (a test's processes), zombies left out. */
export function processesIn(folder: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (cmdline === '') continue; // a zombie: already exited
      let cwd = '';
      try {
        cwd = readlinkSync(`/proc/${pid}/cwd`);
      } catch {
        // Another user's process.
      }
      if (cmdline.includes(folder) || cwd === folder || cwd.startsWith(`${folder}/`)) pids.push(pid);
    } catch {
      // It exited meanwhile.
    }
  }
  return pids;
}

/** Each pid with its command line, for a failure message. */
export function describeProcesses(pids: number[]): string {
  return pids
    .map((pid) => {
      try {
        return `${pid}: ${readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ')}`;
      } catch {
        return `${pid}: (gone)`;
      }
    })
    .join('\n');
}

/** Waits until no process of `folder` is left, failing with the ones that are. */
export async function noProcessesLeftIn(folder: string, options: { timeoutMs?: number; what: string }): Promise<void> {
  await eventually(() => processesIn(folder).length === 0, { timeoutMs: options.timeoutMs, what: () => `${options.what}; left:\n${describeProcesses(processesIn(folder))}` });
}

/** Every running process's children, by parent pid. */
function childrenByParent(): Map<number, number[]> {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // It exited meanwhile.
    }
    // The command name may hold spaces and parentheses: the fields after its last ')' are fixed.
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    const list = children.get(ppid) ?? [];
    list.push(Number(entry));
    children.set(ppid, list);
  }
  return children;
}

/** Pids of the processes whose parent is `pid`. */
export function childrenOf(pid: number): number[] {
  return childrenByParent().get(pid) ?? [];
}

/** Every process below `pid` (stages spawned detached, in process groups of their own, included). */
export function descendants(pid: number): number[] {
  const children = childrenByParent();
  const out: number[] = [];
  const todo = [pid];
  while (todo.length > 0) {
    for (const c of children.get(todo.pop() as number) ?? []) {
      out.push(c);
      todo.push(c);
    }
  }
  return out;
}

/** True while a process with this pid exists (a zombie included). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
