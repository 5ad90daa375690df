import type { SinkEvent } from '../core/component.js';
import type { ViewEvent } from './store.js';

/**
 * A views sink's batch as its store applies it: each event parsed, with its position; its text (without
 * the stamp) only when `withText`, for the default `events` table, which stores it as it came.
 */
export function viewEvents(batch: SinkEvent[], withText: boolean): ViewEvent[] {
  const items: ViewEvent[] = new Array<ViewEvent>(batch.length);
  for (let i = 0; i < batch.length; i++) {
    const e = batch[i] as SinkEvent;
    items[i] = withText ? { event: e.event(), position: e.position, text: e.text } : { event: e.event(), position: e.position };
  }
  return items;
}
