/** src/render: haproxy.cfg + map files from the Registry, validation, atomic writes, guarded reloads. */
export * from './template.js';
export * from './validate.js';
export * from './files.js';
export * from './ports.js';
export * from './guard.js';
export * from './reload.js';
