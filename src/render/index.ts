/** src/render: pure. haproxy.cfg and its map/pattern files from the Registry, and reading a rendered config back. */
export * from './template.js';
export * from './readback.js';
