/**
 * The daemon's HTTP endpoints on `--listen`: /healthz (the process answers), /readyz (the
 * daemon's readiness, with its reasons), /metrics (Prometheus text) and POST /release-hold
 * (`haproxy-updater release-hold`: apply a registry update held by --max-removal).
 */
import http from 'node:http';
import { ConfigError } from '../errors.js';
import { logger } from '../log.js';
import type { Daemon } from './daemon.js';

const log = logger('http');

/** Listens on `host:port`; rejects with a ConfigError naming `--listen` when it cannot bind. */
export async function serveEndpoints(daemon: Pick<Daemon, 'readiness' | 'metrics' | 'releaseHold'>, listen: { host: string; port: number }): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    void (async () => {
      if (req.url === '/healthz') {
        res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      } else if (req.url === '/readyz') {
        const r = daemon.readiness();
        res.writeHead(r.ready ? 200 : 503, { 'content-type': 'text/plain' }).end([...(r.ready ? ['ready'] : r.reasons), ...(r.warnings ?? [])].join('\n') + '\n');
      } else if (req.url === '/release-hold') {
        // A POST only: a GET (a browser, a crawler) must not release anything.
        if (req.method !== 'POST') {
          res.writeHead(405, { 'content-type': 'text/plain', allow: 'POST' }).end('use POST (haproxy-updater release-hold)\n');
          return;
        }
        const hold = await daemon.releaseHold();
        if (hold) res.writeHead(200, { 'content-type': 'text/plain' }).end(`released: ${hold.summary}\n`);
        else res.writeHead(409, { 'content-type': 'text/plain' }).end('nothing is held\n');
      } else if (req.url === '/metrics') {
        res.writeHead(200, { 'content-type': daemon.metrics.registry.contentType }).end(await daemon.metrics.registry.metrics());
      } else {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      }
    })().catch((err: unknown) => {
      log.error({ err }, 'http handler failed');
      if (!res.headersSent) res.writeHead(500).end();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      const why = err.code === 'EADDRINUSE' ? 'the port is in use (EADDRINUSE)' : err.code === 'EACCES' ? 'permission denied (EACCES: a port below 1024 needs root)' : err.code === 'EADDRNOTAVAIL' ? 'no such local address (EADDRNOTAVAIL)' : (err.code ?? err.message);
      reject(new ConfigError(`--listen (HAPROXY_UPDATER_LISTEN): cannot listen on ${listen.host}:${listen.port}: ${why}`, { flag: 'listen', code: err.code }, { cause: err }));
    });
    server.listen(listen.port, listen.host, () => resolve());
  });
  log.info({ listen: `${listen.host}:${listen.port}` }, 'serving /healthz, /readyz, /metrics, POST /release-hold');
  return server;
}
