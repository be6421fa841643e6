/** One HTTP request as tests, bench and demo send it: loopback (or a test namespace) only, bounded, never throwing. */
import http from 'node:http';

export interface RequestOptions {
  /** Default 127.0.0.1. */
  hostname?: string;
  port: number;
  /** Host header. Default `<hostname>:<port>`. */
  host?: string;
  /** Default `/`. */
  path?: string;
  /** Default 10 000 ms. */
  timeoutMs?: number;
  /** A keep-alive agent; default none (a new connection per request, `connection: close`). */
  agent?: http.Agent;
  /** Read the body. Default true. */
  readBody?: boolean;
  /** Cancels the request (reported as error `ABORTED`). */
  signal?: AbortSignal;
}

export interface Reply {
  /** 2xx. */
  ok: boolean;
  /** 0 when no response came. */
  status: number;
  /** Trimmed body ('' when not read). */
  body: string;
  /** Error code (`ECONNREFUSED`, `ETIMEDOUT`, `ABORTED`, …) when no response came. */
  error?: string;
}

/** Load and probes go only to loopback or to addresses of test namespaces (10.200.0.0/16). */
export function assertLocalTarget(hostname: string): void {
  const h = hostname.replace(/^\[|\]$/g, '');
  if (h === 'localhost' || h === '::1' || h.startsWith('127.') || h.startsWith('10.200.')) return;
  throw new Error(`load target must be loopback or a test namespace address, got ${hostname}`);
}

export function httpRequest(o: RequestOptions): Promise<Reply> {
  const hostname = (o.hostname ?? '127.0.0.1').replace(/^\[|\]$/g, '');
  assertLocalTarget(hostname);
  return new Promise((resolve) => {
    let settled = false;
    const settle = (r: Reply) => {
      if (settled) return;
      settled = true;
      resolve(r);
    };
    const failed = (err: NodeJS.ErrnoException) => settle({ ok: false, status: 0, body: '', error: o.signal?.aborted ? 'ABORTED' : (err.code ?? err.message) });
    const req = http.request(
      {
        host: hostname,
        port: o.port,
        path: o.path ?? '/',
        headers: { host: o.host ?? `${hostname}:${o.port}`, connection: o.agent ? 'keep-alive' : 'close' },
        agent: o.agent ?? false,
        timeout: o.timeoutMs ?? 10_000,
        signal: o.signal,
      },
      (res) => {
        let body = '';
        const status = res.statusCode ?? 0;
        if (o.readBody === false) res.resume();
        else {
          res.setEncoding('utf8');
          res.on('data', (c: string) => (body += c));
        }
        res.on('end', () => settle({ ok: status >= 200 && status < 300, status, body: body.trim() }));
        res.on('error', failed);
      },
    );
    req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })));
    req.on('error', failed);
    req.end();
  });
}
