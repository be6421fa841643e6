/** Closed-loop HTTP load for tests: `concurrency` loops, bounded in count and time, loopback or a test namespace only. */
import http from 'node:http';
import { assertLocalTarget, httpRequest } from './http.js';

export interface LoadResult {
  ok: number;
  failed: number;
  /** Status codes / error codes of failures, counted. */
  failures: Record<string, number>;
  /** Latencies in ms of all requests. */
  latencies: number[];
  /** Body (trimmed) → count, for ok responses. */
  bodies: Record<string, number>;
}

export interface LoadOptions {
  /** e.g. http://127.0.0.1:8080/ */
  url: string;
  host?: string;
  /** Parallel request loops. Default 4. */
  concurrency?: number;
  /** Hard stop. Default 5000 ms. */
  durationMs?: number;
  /** Hard cap on requests. Default 100 000. */
  maxRequests?: number;
  /** A status counts as ok when this returns true. Default: 2xx. */
  okStatus?: (status: number) => boolean;
  /** New TCP connection per request (default true: exercises accept during reloads). */
  newConnection?: boolean;
  /** Stop early when this signal aborts. */
  signal?: AbortSignal;
}

export async function runLoad(o: LoadOptions): Promise<LoadResult> {
  const result: LoadResult = { ok: 0, failed: 0, failures: {}, latencies: [], bodies: {} };
  const url = new URL(o.url);
  assertLocalTarget(url.hostname);
  const deadline = Date.now() + (o.durationMs ?? 5000);
  const max = o.maxRequests ?? 100_000;
  const okStatus = o.okStatus ?? ((s: number) => s >= 200 && s < 300);
  const agent = o.newConnection === false ? new http.Agent({ keepAlive: true, maxSockets: o.concurrency ?? 4 }) : undefined;
  let sent = 0;
  const one = async () => {
    const start = performance.now();
    const r = await httpRequest({ hostname: url.hostname, port: Number(url.port), host: o.host ?? url.host, path: url.pathname + url.search, agent });
    result.latencies.push(performance.now() - start);
    if (r.status && okStatus(r.status)) {
      result.ok++;
      result.bodies[r.body] = (result.bodies[r.body] ?? 0) + 1;
    } else {
      result.failed++;
      const k = r.error ?? String(r.status);
      result.failures[k] = (result.failures[k] ?? 0) + 1;
    }
  };
  const loop = async () => {
    while (Date.now() < deadline && sent < max && !o.signal?.aborted) {
      sent++;
      await one();
    }
  };
  await Promise.all(Array.from({ length: o.concurrency ?? 4 }, loop));
  agent?.destroy();
  return result;
}

/** The p-th percentile (nearest rank) of `values`; 0 for none. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx] ?? 0;
}
