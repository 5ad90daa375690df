/**
 * The supervisor's state machine, in one place. A pipeline starts, runs, may pause to recover from a
 * crash, stops (drains) and is done:
 *
 *   starting ──> running <──> recovering
 *      │            │             │
 *      └────────────┴─────────────┴──> stopping ──> done
 *
 * A stop wins over everything else: once stopping, a start or recovery that finishes later does not put
 * the pipeline back to running, and `done` is final.
 */
export type State = 'starting' | 'running' | 'recovering' | 'stopping' | 'done';

const NEXT: Record<State, readonly State[]> = {
  starting: ['running', 'stopping'],
  running: ['recovering', 'stopping'],
  recovering: ['running', 'stopping'],
  stopping: ['stopping', 'done'],
  done: [],
};

/** Where the pipeline is in its life; `enter` is the only way to move. */
export class Lifecycle {
  private current: State = 'starting';

  get state(): State {
    return this.current;
  }

  /** Moves to `to` when the machine allows it; false (and no move) otherwise. */
  enter(to: State): boolean {
    if (!NEXT[this.current].includes(to)) return false;
    this.current = to;
    return true;
  }
}
