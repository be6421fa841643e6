/**
 * The kit that integration tests, the benchmark and the demo stand on: real etcd, real
 * HAProxy, upstream HTTP servers and the real updater as child processes on loopback, in
 * temp dirs, tracked and stopped by PID; bounded load; waiting; a test CA. Executables come
 * from HAPROXY_BIN / ETCD_BIN / ETCDCTL_BIN (bins.ts).
 */
export * from './bins.js';
export * from './process.js';
export * from './wait.js';
export * from './resources.js';
export * from './tls.js';
export * from './etcd.js';
export * from './haproxy.js';
export * from './http.js';
export * from './backend.js';
export * from './load.js';
export * from './updater.js';
export * from './tlsclient.js';
export * from './test-logs.js';
