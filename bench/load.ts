/**
 * Open-loop ("paced") HTTP load for the benchmark: one request every `intervalMs`, at most
 * `maxInFlight` at once, bounded by `maxRequests` and `durationMs` (loopback or a test
 * namespace only). Unlike testkit's closed-loop `runLoad`, a stall does not slow the
 * sender down, so it shows up in the latencies (and as `skipped` ticks when `maxInFlight`
 * requests are all stuck) instead of being hidden.
 */
import http from 'node:http';
import { performance } from 'node:perf_hooks';
import { assertLocalTarget, httpRequest, percentile as pct } from '../testkit/index.js';

export interface PacedLoadOptions {
  /** e.g. http://127.0.0.1:8080/ */
  url: string;
  host: string;
  /** Pause between two request starts. Default 2 ms. */
  intervalMs?: number;
  /** Requests in flight at most; a tick finding them all busy is skipped (counted). Default 8. */
  maxInFlight?: number;
  /** Hard cap on requests. Default 200 000. */
  maxRequests?: number;
  /** Hard stop. Default 60 000 ms. */
  durationMs?: number;
  /** Reuse connections (keep-alive) instead of a new TCP connection per request. Default false. */
  keepAlive?: boolean;
  /** Per-request timeout. Default 10 000 ms. */
  timeoutMs?: number;
}

export interface LoadSummary {
  requests: number;
  ok: number;
  failed: number;
  /** Status codes / error codes of failures, counted. */
  failures: Record<string, number>;
  /** Ticks that found `maxInFlight` requests still running. */
  skipped: number;
  p50: number;
  p99: number;
  max: number;
  /** Requests slower than 0.5 s, 1.5 s, 2.5 s (a SYN dropped once costs ~1 s, twice ~2-3 s). */
  slow: { over500ms: number; over1500ms: number; over2500ms: number };
  durationMs: number;
  /** Achieved requests per second. */
  rps: number;
}

export interface PacedLoad {
  /** Stops sending, waits for the requests in flight, and summarizes. */
  stop(): Promise<LoadSummary>;
  /** Requests answered so far (ok + failed). */
  readonly done: number;
  readonly ok: number;
}

export function startPacedLoad(o: PacedLoadOptions): PacedLoad {
  const url = new URL(o.url);
  assertLocalTarget(url.hostname);
  const interval = Math.max(1, o.intervalMs ?? 2);
  const maxInFlight = o.maxInFlight ?? 8;
  const maxRequests = o.maxRequests ?? 200_000;
  const deadline = Date.now() + (o.durationMs ?? 60_000);
  const agent = o.keepAlive ? new http.Agent({ keepAlive: true, maxSockets: maxInFlight }) : undefined;
  const latencies: number[] = [];
  const failures: Record<string, number> = {};
  let sent = 0;
  let ok = 0;
  let failed = 0;
  let skipped = 0;
  let inFlight = 0;
  let drained: (() => void) | null = null;
  const started = performance.now();

  const finish = (startedAt: number, failure: string | null) => {
    latencies.push(performance.now() - startedAt);
    if (failure === null) ok++;
    else {
      failed++;
      failures[failure] = (failures[failure] ?? 0) + 1;
    }
    inFlight--;
    if (inFlight === 0 && drained) drained();
  };

  const one = () => {
    sent++;
    inFlight++;
    const t = performance.now();
    void httpRequest({ hostname: url.hostname, port: Number(url.port), host: o.host, path: url.pathname + url.search, agent, timeoutMs: o.timeoutMs ?? 10_000, readBody: false }).then((r) =>
      finish(t, r.ok ? null : (r.error ?? String(r.status))),
    );
  };

  const timer = setInterval(() => {
    if (sent >= maxRequests || Date.now() >= deadline) {
      clearInterval(timer);
      return;
    }
    if (inFlight >= maxInFlight) {
      skipped++;
      return;
    }
    one();
  }, interval);

  return {
    get done() {
      return ok + failed;
    },
    get ok() {
      return ok;
    },
    async stop() {
      clearInterval(timer);
      if (inFlight > 0) await new Promise<void>((r) => (drained = r));
      agent?.destroy();
      const durationMs = performance.now() - started;
      return {
        requests: ok + failed,
        ok,
        failed,
        failures,
        skipped,
        p50: pct(latencies, 50),
        p99: pct(latencies, 99),
        max: latencies.reduce((m, v) => (v > m ? v : m), 0),
        slow: {
          over500ms: latencies.filter((v) => v > 500).length,
          over1500ms: latencies.filter((v) => v > 1500).length,
          over2500ms: latencies.filter((v) => v > 2500).length,
        },
        durationMs,
        rps: ((ok + failed) / durationMs) * 1000,
      };
    },
  };
}
