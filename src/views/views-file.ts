import type { ReadFile } from '../core/component.js';

/**
 * A sink's views file as a file it reads: its handler modules are read too (a change to one is a change
 * to the sink). The definitions load only when asked, not with every cqp command.
 */
export const viewsFileRead: ReadFile = {
  async names(file) {
    const { loadViewsFile } = await import('./definition.js');
    return loadViewsFile(file).flatMap((view) => (view.kind === 'handler' ? [view.handler] : []));
  },
};
