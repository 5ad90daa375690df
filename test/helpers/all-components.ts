import { loadNamedComponents } from '../../src/core/registry.js';

/*
 * Loads every built-in component before each test file: the commands load only those a pipeline names
 * (openPipeline), while tests call the synchronous parsing and the registry directly.
 */
await Promise.all([loadNamedComponents('filter'), loadNamedComponents('source'), loadNamedComponents('sink')]);
