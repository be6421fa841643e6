/** Upstream HTTP servers for tests, bench and demo: answer `<id>\n`, count what they served. */
import http from 'node:http';
import { waitFor } from './wait.js';

export interface Backend {
  readonly id: string;
  readonly port: number;
  /** Requests served (excluding /health). */
  hits: number;
  /** Time of the first non-health request, ms since epoch (0 = none yet). */
  firstHitAt: number;
  /** Time of the latest non-health request, ms since epoch (0 = none yet). */
  readonly lastHitAt: number;
  /** Requests being answered now. */
  readonly inflight: number;
  /**
   * Closes the server. With `graceMs`, first lets in-flight requests finish (at most that
   * long); otherwise drops open connections at once.
   */
  close(o?: { graceMs?: number }): Promise<void>;
}

export interface BackendOptions {
  /** Answer every request after this delay. Default 0. */
  delayMs?: number;
  /** Default 0: any free port. */
  port?: number;
  /** Default 127.0.0.1; a test namespace's address for the cluster hosts. */
  host?: string;
  /** Called when a counted request starts (with its start time) and when it is answered. */
  onRequest?: (startedAt: number) => (() => void) | void;
}

/**
 * An HTTP server on 127.0.0.1 (or `host`) answering `<id>\n`; `/health` answers 200 without counting;
 * `/slow?ms=N` (N < 10 000) answers after N ms.
 */
export async function startBackend(id: string, opts: BackendOptions = {}): Promise<Backend> {
  const state = { hits: 0, firstHitAt: 0, lastHitAt: 0, inflight: 0 };
  const server = http.createServer((req, res) => {
    if (req.url === '/health') {
      res.end('ok\n');
      return;
    }
    const started = Date.now();
    state.hits++;
    state.inflight++;
    if (!state.firstHitAt) state.firstHitAt = started;
    state.lastHitAt = started;
    const done = opts.onRequest?.(started);
    const send = () => {
      state.inflight--;
      done?.();
      res.setHeader('content-type', 'text/plain');
      res.end(`${id}\n`);
    };
    const delay = Number(/^\/slow\?ms=(\d{1,4})$/.exec(req.url ?? '')?.[1] ?? opts.delayMs ?? 0);
    if (delay) setTimeout(send, delay);
    else send();
  });
  server.keepAliveTimeout = 1000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => resolve());
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  return {
    id,
    port,
    get hits() {
      return state.hits;
    },
    set hits(v: number) {
      state.hits = v;
    },
    get firstHitAt() {
      return state.firstHitAt;
    },
    set firstHitAt(v: number) {
      state.firstHitAt = v;
    },
    get lastHitAt() {
      return state.lastHitAt;
    },
    get inflight() {
      return state.inflight;
    },
    async close(o = {}) {
      if (o.graceMs) {
        await waitFor(() => state.inflight === 0, { timeoutMs: o.graceMs, intervalMs: 50, what: `${id} idle` }).catch(() => undefined);
        server.closeIdleConnections();
      }
      await new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      });
    },
  };
}
