/**
 * The admission probe: the updater's own check of a new upstream before it gets traffic.
 * One attempt, one deadline, no retries: a failed probe only means HAProxy's own checks
 * decide (the server stays held DOWN), so a false "fail" costs time, never correctness.
 *
 * The kinds (spec.ts) mirror what HAProxy's check of the backend does. Certificates are not
 * verified: HAProxy's passthrough never looks at them either.
 */
import net from 'node:net';
import http from 'node:http';
import https from 'node:https';
import tls from 'node:tls';
import type { ProbeSpec } from './spec.js';

export { probeSpecFor, type ProbeSpec } from './spec.js';

/** Verdict labels: also the `result` label of `haproxy_updater_admission_probes_total`. */
export type ProbeResult = 'ok' | 'refused' | 'timeout' | 'http-status' | 'tls' | 'error';
export const PROBE_RESULTS: readonly ProbeResult[] = ['ok', 'refused', 'timeout', 'http-status', 'tls', 'error'];

export interface Verdict {
  readonly result: ProbeResult;
  readonly ok: boolean;
  /** Wall time of the probe, ms. */
  readonly ms: number;
  /** What failed (status code, error code); '' when ok. */
  readonly detail: string;
}

/** Sent with every HTTP probe, so an upstream (and a test) can tell it from client traffic. */
export const PROBE_USER_AGENT = 'haproxy-updater-admission';

export interface ProbeTarget {
  readonly addr: string;
  readonly port: number;
}

/** Runs one probe; never throws (every failure is a verdict). */
export async function probe(target: ProbeTarget, spec: ProbeSpec, timeoutMs: number): Promise<Verdict> {
  const started = performance.now();
  const verdict = (result: ProbeResult, detail = ''): Verdict => ({ result, ok: result === 'ok', ms: performance.now() - started, detail });
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), timeoutMs);
  try {
    const outcome = await attempt(target, spec, ac.signal);
    return verdict(outcome.result, outcome.detail);
  } catch (err) {
    if (ac.signal.aborted) return verdict('timeout', `no verdict within ${timeoutMs} ms`);
    return verdict(classify(err, spec), (err as NodeJS.ErrnoException).code ?? (err as Error).message);
  } finally {
    clearTimeout(timer);
  }
}

function classify(err: unknown, spec: ProbeSpec): ProbeResult {
  const code = (err as NodeJS.ErrnoException).code ?? '';
  if (code === 'ECONNREFUSED') return 'refused';
  if (code === 'ETIMEDOUT') return 'timeout';
  // Node's TLS errors are ERR_SSL_*, or a reset/close during the handshake.
  if ((spec.kind === 'tls' || (spec.kind === 'http' && spec.tls)) && (/^ERR_SSL|^ERR_TLS|EPROTO/.test(code) || code === 'ECONNRESET')) return 'tls';
  return 'error';
}

type Outcome = { result: ProbeResult; detail: string };

function attempt(target: ProbeTarget, spec: ProbeSpec, signal: AbortSignal): Promise<Outcome> {
  switch (spec.kind) {
    case 'tcp':
      return connectOnce(() => net.connect({ host: target.addr, port: target.port }), 'connect', signal);
    case 'tls':
      return connectOnce(() => tls.connect({ host: target.addr, port: target.port, rejectUnauthorized: false }), 'secureConnect', signal);
    case 'http':
      return httpGet(target, spec, signal);
  }
}

/** Resolves on `event` (connected / handshake done), rejects on error or abort; the socket is always destroyed. */
function connectOnce(open: () => net.Socket, event: 'connect' | 'secureConnect', signal: AbortSignal): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const sock = open();
    const done = (fn: () => void) => {
      signal.removeEventListener('abort', onAbort);
      sock.destroy();
      fn();
    };
    const onAbort = () => done(() => reject(new Error('aborted')));
    signal.addEventListener('abort', onAbort, { once: true });
    sock.once(event, () => done(() => resolve({ result: 'ok', detail: '' })));
    sock.once('error', (err) => done(() => reject(err)));
    // A peer that closes before the TLS handshake completes emits `close` without `error` on some Node versions.
    sock.once('close', () => done(() => reject(Object.assign(new Error('closed before the handshake'), { code: 'ECONNRESET' }))));
  });
}

function httpGet(target: ProbeTarget, spec: Extract<ProbeSpec, { kind: 'http' }>, signal: AbortSignal): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const opts: https.RequestOptions = {
      host: target.addr,
      port: target.port,
      path: spec.path,
      method: 'GET',
      agent: false,
      signal,
      headers: { 'user-agent': PROBE_USER_AGENT, connection: 'close' },
    };
    const req = spec.tls ? https.request({ ...opts, rejectUnauthorized: false }) : http.request(opts);
    req.once('response', (res) => {
      const status = res.statusCode ?? 0;
      res.resume();
      req.destroy();
      resolve(status >= 200 && status < 400 ? { result: 'ok', detail: '' } : { result: 'http-status', detail: String(status) });
    });
    req.once('error', reject);
    req.end();
  });
}
