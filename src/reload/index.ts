/** src/reload: the executor. `haproxy -c` validation, atomic writes, port probes, guards and the guarded reload. */
export * from './validate.js';
export * from './files.js';
export * from './ports.js';
export * from './guard.js';
export * from './reload.js';
export * from './quarantine.js';
