/**
 * Starts the real `haproxy-updater run` as a child process (managed HAProxy, the HAProxy
 * executable from `bins.ts`) for end-to-end tests, the demo and the benchmark.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { haproxyBin } from './bins.js';
import { httpRequest } from './http.js';
import { killProcess, startProcess, stopProcess, waitReady, type Proc } from './process.js';
import { freePort } from './resources.js';
import { testLog } from './test-logs.js';

/** The CLI entry point, `bin/haproxy-updater.js`. */
export const BIN = fileURLToPath(new URL('../bin/haproxy-updater.js', import.meta.url));

export interface UpdaterHandle {
  proc: Proc;
  stateDir: string;
  httpPort: number;
  httpsPort: number;
  listenPort: number;
  masterSocket: string;
  adminSocket: string;
  args: string[];
  /** GET on the --listen server. */
  get(pathname: string): Promise<{ status: number; body: string }>;
  /** SIGTERM, SIGKILL after `graceMs` (default 10 000), and wait. */
  stop(graceMs?: number): Promise<void>;
  /** SIGKILL (HAProxy keeps running). */
  kill(): Promise<void>;
}

export interface UpdaterOptions {
  etcdEndpoint: string;
  stateDir: string;
  /** Default: a free port (also for `httpsPort`, `listenPort`). */
  httpPort?: number;
  httpsPort?: number;
  listenPort?: number;
  /** Appended after the defaults (so they can override them). */
  extraArgs?: string[];
  /** Added to this process's environment. */
  env?: NodeJS.ProcessEnv;
  /** Wait until /readyz says ready. Default true. */
  waitReady?: boolean;
}

export async function startUpdater(o: UpdaterOptions): Promise<UpdaterHandle> {
  const httpPort = o.httpPort ?? (await freePort());
  const httpsPort = o.httpsPort ?? (await freePort());
  const listenPort = o.listenPort ?? (await freePort());
  const args = [
    BIN,
    'run',
    '--etcd', o.etcdEndpoint,
    '--state-dir', o.stateDir,
    '--haproxy', 'managed',
    '--bind-address', '127.0.0.1',
    '--http-port', String(httpPort),
    '--https-port', String(httpsPort),
    '--listen', `127.0.0.1:${listenPort}`,
    '--haproxy-bin', haproxyBin(),
    '--verify-interval', '1s',
    '--drain-timeout', '3s',
    '--log-level', process.env.UPDATER_LOG_LEVEL ?? 'warn',
    ...(o.extraArgs ?? []),
  ];
  const proc = startProcess(process.execPath, args, { env: { ...process.env, ...o.env } });
  // Into the test's log: printed only if the test fails (test-logs.ts).
  for (const stream of [proc.child.stdout, proc.child.stderr]) {
    stream?.on('data', (b: Buffer) => {
      for (const line of b.toString('utf8').split('\n')) if (line) testLog(`[updater ${proc.pid}] ${line}`);
    });
  }
  const get = async (pathname: string) => {
    const r = await httpRequest({ port: listenPort, path: pathname, timeoutMs: 3000 });
    if (r.error) throw new Error(`GET ${pathname} on --listen: ${r.error}`);
    return { status: r.status, body: r.body };
  };
  const handle: UpdaterHandle = {
    proc,
    stateDir: o.stateDir,
    httpPort,
    httpsPort,
    listenPort,
    masterSocket: path.join(o.stateDir, 'master.sock'),
    adminSocket: path.join(o.stateDir, 'admin.sock'),
    args,
    get,
    stop: (graceMs = 10_000) => stopProcess(proc, graceMs),
    kill: () => killProcess(proc),
  };
  if (o.waitReady !== false) {
    await waitReady(proc, 'updater /readyz', async () => (await get('/readyz')).status === 200, { timeoutMs: 30_000, intervalMs: 100 });
  }
  return handle;
}
