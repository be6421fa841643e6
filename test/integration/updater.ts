/**
 * Starts the real `haproxy-updater run` as a child process (managed HAProxy) for
 * end-to-end tests, the demo and the benchmark, and reads HAProxy's own reload counter
 * from its master CLI.
 */
import path from 'node:path';
import http from 'node:http';
import { fileURLToPath } from 'node:url';
import { startProcess, stopProcess, socketCommand, waitFor, freePort, HAPROXY_BIN, type Proc } from './harness.js';

export const BIN = fileURLToPath(new URL('../../bin/haproxy-updater.js', import.meta.url));

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
  /** SIGTERM and wait. */
  stop(): Promise<void>;
  /** SIGKILL (HAProxy keeps running). */
  kill(): Promise<void>;
}

export interface UpdaterOptions {
  etcdEndpoint: string;
  stateDir: string;
  httpPort?: number;
  httpsPort?: number;
  listenPort?: number;
  extraArgs?: string[];
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
    '--verify-interval', '1s',
    '--drain-timeout', '3s',
    '--log-level', process.env.UPDATER_LOG_LEVEL ?? 'warn',
    '--haproxy-bin', HAPROXY_BIN,
    ...(o.extraArgs ?? []),
  ];
  const proc = startProcess(process.execPath, args, { env: { ...process.env, ...o.env } });
  const get = (pathname: string) =>
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = http.get({ host: '127.0.0.1', port: listenPort, path: pathname, agent: false, timeout: 3000 }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('error', reject);
      req.on('timeout', () => req.destroy(new Error('timeout')));
    });
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
    stop: () => stopProcess(proc, 10_000),
    kill: async () => {
      const exited = new Promise<void>((r) => proc.child.once('exit', () => r()));
      proc.child.kill('SIGKILL');
      await exited;
    },
  };
  if (o.waitReady !== false) {
    await waitFor(
      async () => {
        if (proc.child.exitCode !== null) throw new Error(`updater exited ${proc.child.exitCode}: ${proc.output.slice(-20).join('\n')}`);
        return (await get('/readyz')).status === 200;
      },
      { timeoutMs: 30_000, intervalMs: 100, what: 'updater /readyz' },
    ).catch((err: unknown) => {
      void stopProcess(proc, 1000);
      throw new Error(`${(err as Error).message}\n${proc.output.slice(-30).join('\n')}`);
    });
  }
  return handle;
}

export interface MasterView {
  masterPid: number;
  reloads: number;
  failed: number;
  workers: number[];
}

/** HAProxy's own view (not the updater's counters): `show proc` on the master CLI. */
export async function masterView(masterSocket: string): Promise<MasterView> {
  const text = await socketCommand(masterSocket, 'show proc');
  const master = /^(\d+)\s+master\s+(\d+)\s+\[failed:\s*(\d+)\]/m.exec(text);
  if (!master) throw new Error(`unexpected show proc: ${text}`);
  const workersSection = text.split('# workers')[1]?.split('#')[0] ?? '';
  const workers = [...workersSection.matchAll(/^(\d+)\s+worker/gm)].map((m) => Number(m[1]));
  return { masterPid: Number(master[1]), reloads: Number(master[2]), failed: Number(master[3]), workers };
}

/** Kills the HAProxy master (and its workers) left behind by a test, by PID. */
export async function killHaproxy(masterSocket: string): Promise<void> {
  const view = await masterView(masterSocket).catch(() => null);
  if (!view) return;
  for (const pid of [view.masterPid, ...view.workers]) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}
