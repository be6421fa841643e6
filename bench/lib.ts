/** Shared helpers of the benchmark: statistics, etcd writes, HAProxy state polling, machine facts. */
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { Etcd3 } from 'etcd3';
import { RuntimeClient, parseServersState, showServersState, isMaint, type ServerStateRow } from '../src/runtime/index.js';
import { execFileP, sleep } from '../test/integration/harness.js';
import { masterView, type MasterView } from '../test/integration/updater.js';
import { pct } from './load.js';

export { pct };

export interface Dist {
  n: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
  mean: number;
}

export function dist(values: readonly number[]): Dist {
  const n = values.length;
  return {
    n,
    p50: pct(values, 50),
    p95: pct(values, 95),
    p99: pct(values, 99),
    max: values.reduce((m, v) => (v > m ? v : m), 0),
    mean: n ? values.reduce((a, b) => a + b, 0) / n : 0,
  };
}

/** Milliseconds since an arbitrary origin, sub-millisecond resolution. */
export const now = () => performance.now();

export function log(msg: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

export function etcdClient(endpoint: string): Etcd3 {
  return new Etcd3({ hosts: endpoint });
}

/** Puts key/value pairs with at most `concurrency` requests outstanding. */
export async function putMany(client: Etcd3, entries: ReadonlyArray<readonly [string, string]>, concurrency = 64): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < entries.length) {
      const [k, v] = entries[next++]!;
      await client.put(k).value(v);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, entries.length) }, worker));
}

/** Polls until `fn` returns a truthy value; null on timeout (the caller reports it). */
export async function until<T>(fn: () => Promise<T> | T, timeoutMs: number, intervalMs = 20): Promise<T | null> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch {
      /* not yet */
    }
    if (Date.now() >= deadline) return null;
    await sleep(intervalMs);
  }
}

export async function serversState(adminSocket: string, timeoutMs = 10_000): Promise<ServerStateRow[]> {
  const rt = new RuntimeClient({ path: adminSocket }, { timeoutMs });
  return parseServersState(await rt.run(showServersState()));
}

/** Servers that carry an upstream address and are out of maintenance; and of those, the UP ones. */
export function countLive(rows: readonly ServerStateRow[], backendRe: RegExp): { configured: number; up: number } {
  let configured = 0;
  let up = 0;
  for (const r of rows) {
    if (!backendRe.test(r.beName)) continue;
    if (r.srvAddr === '0.0.0.0' || r.srvAddr === '::' || r.srvAddr === '-' || isMaint(r)) continue;
    configured++;
    if (r.srvOpState === 2) up++;
  }
  return { configured, up };
}

/** VmRSS of a process in MiB (null when unreadable). */
export async function rssMiB(pid: number): Promise<number | null> {
  const text = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(text);
  return m ? Number(m[1]) / 1024 : null;
}

export interface Machine {
  cpus: number;
  cpuModel: string;
  memGiB: number;
  kernel: string;
  node: string;
  haproxy: string;
  etcd: string;
  root: boolean;
}

export async function machine(): Promise<Machine> {
  const ver = async (cmd: string, args: string[]) => {
    try {
      const { stdout } = await execFileP(cmd, args);
      return stdout.split('\n')[0]?.trim() ?? '';
    } catch {
      return 'unknown';
    }
  };
  return {
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model.trim() ?? 'unknown',
    memGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    kernel: os.release(),
    node: process.version,
    haproxy: (await ver('haproxy', ['-v'])).replace(/ - https?:.*$/, ''),
    etcd: await ver('etcd', ['--version']),
    root: process.getuid?.() === 0,
  };
}

export const round = (v: number, digits = 1) => Math.round(v * 10 ** digits) / 10 ** digits;

/** One GET through HAProxy; resolves the trimmed body of a 2xx answer, null otherwise. */
export function httpGet(port: number, host: string, timeoutMs = 2000): Promise<string | null> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', headers: { host }, agent: false, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve((res.statusCode ?? 0) >= 200 && (res.statusCode ?? 0) < 300 ? body.trim() : null));
      res.on('error', () => resolve(null));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve(null));
  });
}

/** HAProxy's own reload counter (`show proc`), retried while the master re-executes. */
export async function reloadsOf(masterSocket: string): Promise<number> {
  const v = await until(() => masterView(masterSocket), 20_000, 50);
  if (!v) throw new Error(`master CLI ${masterSocket} did not answer`);
  return v.reloads;
}

export async function viewOf(masterSocket: string): Promise<MasterView> {
  const v = await until(() => masterView(masterSocket), 20_000, 50);
  if (!v) throw new Error(`master CLI ${masterSocket} did not answer`);
  return v;
}
