/** src/daemon: the daemon (observe, plan, decide, execute), its HTTP endpoints, the managed HAProxy, and the one-shot commands. */
export * from './daemon.js';
export * from './observe.js';
export * from './apply.js';
export * from './haproxy-process.js';
export * from './http.js';
export { unservedServices, describeUnserved, type Unserved } from './readiness.js';
/** `--max-removal`'s parser, so the CLI can name the flag. */
export { parseMaxRemoval } from '../reconcile/hold.js';
export * from './oneshot.js';
/** Render settings are part of the daemon's options: `defaultSettings(stateDir)` is their base. */
export { defaultSettings, type RenderSettings } from '../render/index.js';
/** The stats credential and log target rules, so the CLI can name the flag that breaks one. */
export { STATS_PASSWORD_RE, STATS_USER_RE, logTarget } from '../render/safe.js';
export * from './lock.js';
