/** Shared helpers of the benchmark: statistics, etcd writes, HAProxy state polling, machine facts. */
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { Etcd3 } from 'etcd3';
import { SRV_OP, type ServerStateRow } from '../src/runtime/index.js';
import { httpRequest, masterView, percentile as pct, slotUse, toolVersions, until, type MasterView } from '../testkit/index.js';

export { pct, until };

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

export { readServers as serversState } from '../testkit/index.js';

/** Servers that carry an upstream address and are out of maintenance; and of those, the UP ones. */
export function countLive(rows: readonly ServerStateRow[], backendRe: RegExp): { configured: number; up: number } {
  let configured = 0;
  let up = 0;
  for (const r of rows) {
    if (!backendRe.test(r.beName)) continue;
    const use = slotUse(r);
    if (use === 'free' || use === 'maint') continue;
    configured++;
    if (r.srvOpState === SRV_OP.RUNNING) up++;
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
  /** Version line and path of the HAProxy in use (HAPROXY_BIN or PATH). */
  haproxy: string;
  /** Version line and path of the etcd in use (ETCD_BIN or PATH). */
  etcd: string;
  root: boolean;
}

export async function machine(): Promise<Machine> {
  const [haproxy, etcd] = await toolVersions(['haproxy', 'etcd']);
  return {
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model.trim() ?? 'unknown',
    memGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    kernel: os.release(),
    node: process.version,
    haproxy: `${haproxy!.version} (${haproxy!.path})`,
    etcd: `${etcd!.version} (${etcd!.path})`,
    root: process.getuid?.() === 0,
  };
}

export const round = (v: number, digits = 1) => Math.round(v * 10 ** digits) / 10 ** digits;

/** One GET through HAProxy; resolves the trimmed body of a 2xx answer, null otherwise. */
export async function httpGet(port: number, host: string, timeoutMs = 2000): Promise<string | null> {
  const r = await httpRequest({ port, host, timeoutMs });
  return r.ok ? r.body : null;
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
