/**
 * Creates the etcd3 client used by the watcher and by `register`: endpoint validation, TLS
 * files, auth, per-call deadlines, gRPC keepalive, and fault handling instead of etcd3's
 * defaults (3 retries + a per-host circuit breaker that refuses every call for 5 s after 3
 * failures — with one endpoint that only delays recovery after etcd comes back; the
 * watcher has its own backoff).
 */
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import type * as Grpc from '@grpc/grpc-js';
import { Etcd3, EtcdAuthenticationFailedError, EtcdPermissionDeniedError, isRecoverableError, type IOptions } from 'etcd3';
import { ConfigError, EtcdUnavailableError, UpdaterError } from '../errors.js';

export interface EtcdTlsOptions {
  /** CA bundle (PEM file path). Default: the system roots. */
  ca?: string;
  /** Client certificate (PEM file path); needs `key`. */
  cert?: string;
  /** Client key (PEM file path); needs `cert`. */
  key?: string;
}

export interface EtcdAuthOptions {
  username: string;
  password: string;
}

export interface EtcdConnectOptions {
  /** `http(s)://host:port` URLs; all http or all https. */
  endpoints: string[];
  tls?: EtcdTlsOptions;
  auth?: EtcdAuthOptions;
  /** Deadline of each unary call (get, put, txn, lease grant). Default 5000 ms. */
  requestTimeoutMs?: number;
  /**
   * Send gRPC metadata `hasleader=true` on every call. Default false. etcd then refuses a
   * call on a member without a leader, and cancels an open watch stream once that member
   * has had no leader for 3 election timeouts (a member cut off from the quorum), instead
   * of leaving the stream open and silent.
   */
  requireLeader?: boolean;
}

export const DEFAULT_REQUEST_TIMEOUT_MS = 5000;
/** With several endpoints, how long a failed one is skipped. */
const HOST_SKIP_MS = 2000;

type Policy = NonNullable<NonNullable<IOptions['faultHandling']>['global']>;

/** Host policy: call straight through (no circuit breaker). */
const passthrough = {
  execute: async (fn: (ctx: { signal: AbortSignal; attempt: number }) => unknown) => fn({ signal: new AbortController().signal, attempt: 0 }),
} as unknown as Policy;

/**
 * Host policy with several endpoints: after a connection error the host is skipped for
 * `openMs`, so that etcd3 picks another endpoint (it only fails over when a host policy
 * refuses the call; a watch stream is bound to the host it was opened on). With one
 * endpoint this is not used: refusing calls to the only host would just delay recovery.
 */
function skipAfterFailure(openMs: number): Policy {
  let openUntil = 0;
  return {
    execute: async (fn: (ctx: { signal: AbortSignal; attempt: number }) => unknown) => {
      if (Date.now() < openUntil) throw new Error('etcd endpoint failed recently; trying another');
      try {
        return await fn({ signal: new AbortController().signal, attempt: 0 });
      } catch (err) {
        if (err instanceof Error && isRecoverableError(err)) openUntil = Date.now() + openMs;
        throw err;
      }
    },
  } as unknown as Policy;
}

/** Global policy: on a recoverable (connection) error try the next endpoint at once, each at most once per call. */
function failover(attempts: number): Policy {
  return {
    execute: async (fn: (ctx: { signal: AbortSignal; attempt: number }) => unknown) => {
      for (let attempt = 0; ; attempt++) {
        try {
          return await fn({ signal: new AbortController().signal, attempt });
        } catch (err) {
          if (attempt + 1 >= attempts || !(err instanceof Error) || !isRecoverableError(err)) throw err;
        }
      }
    },
  } as unknown as Policy;
}

// The copy of grpc-js that etcd3 loads: an interceptor must be built with that copy's classes.
const grpc = createRequire(createRequire(import.meta.url).resolve('etcd3'))('@grpc/grpc-js') as typeof Grpc;

/** etcd's require-leader metadata (rpctypes.MetadataRequireLeaderKey / MetadataHasLeader). */
const requireLeaderInterceptor: Grpc.Interceptor = (options, nextCall) =>
  new grpc.InterceptingCall(nextCall(options), {
    start(metadata, listener, next) {
      // A copy: etcd3 hands every call the same cached (auth token) metadata object.
      const md = metadata.clone();
      md.set('hasleader', 'true');
      next(md, listener);
    },
  });

/** Validates endpoint URLs; returns them normalised (`http://127.0.0.1:2379`). */
export function validateEndpoints(endpoints: readonly string[], tls?: EtcdTlsOptions): string[] {
  if (!Array.isArray(endpoints) || endpoints.length === 0) throw new ConfigError('no etcd endpoints given', { endpoints });
  const out = endpoints.map((e) => {
    let url: URL;
    try {
      url = new URL(e);
    } catch {
      throw new ConfigError(`etcd endpoint ${JSON.stringify(e)} is not a URL (expected http://host:port)`, { endpoint: e });
    }
    if ((url.protocol !== 'http:' && url.protocol !== 'https:') || !url.hostname || (url.pathname !== '/' && url.pathname !== '') || url.search || url.username) {
      throw new ConfigError(`etcd endpoint ${JSON.stringify(e)} must be http(s)://host:port`, { endpoint: e });
    }
    return `${url.protocol}//${url.host}`;
  });
  const secure = out.filter((e) => e.startsWith('https:')).length;
  if (secure !== 0 && secure !== out.length) throw new ConfigError('etcd endpoints mix http and https', { endpoints });
  if (tls && (tls.ca || tls.cert || tls.key) && secure === 0) throw new ConfigError('etcd TLS options given but the endpoints are http://', { endpoints });
  if (tls && Boolean(tls.cert) !== Boolean(tls.key)) throw new ConfigError('etcd TLS client cert and key must be given together', {});
  return out;
}

async function readPem(path: string, what: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (err) {
    throw new ConfigError(`cannot read etcd TLS ${what} ${path}: ${(err as Error).message}`, { path }, { cause: err });
  }
}

export async function createEtcdClient(o: EtcdConnectOptions): Promise<Etcd3> {
  const hosts = validateEndpoints(o.endpoints, o.tls);
  const timeout = o.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
  if (!Number.isFinite(timeout) || timeout <= 0) throw new ConfigError('requestTimeoutMs must be > 0', { requestTimeoutMs: timeout });
  const options: IOptions = {
    hosts,
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + timeout }),
    faultHandling: { host: () => (hosts.length > 1 ? skipAfterFailure(HOST_SKIP_MS) : passthrough), global: failover(hosts.length) },
    grpcOptions: {
      // Detect a dead peer on an idle watch stream (etcd's default enforcement minimum is 5 s).
      'grpc.keepalive_time_ms': 10_000,
      'grpc.keepalive_timeout_ms': 5_000,
      'grpc.keepalive_permit_without_calls': 0,
      // Reconnect within 1 s of a member (or the network to it) coming back, and keep that
      // state per client rather than in grpc-js's process-wide subchannel pool.
      'grpc.initial_reconnect_backoff_ms': 250,
      'grpc.max_reconnect_backoff_ms': 1000,
      'grpc.use_local_subchannel_pool': 1,
      // etcd3 types grpcOptions as channel options, but hands them to the grpc-js Client
      // constructor, which also takes interceptors.
      ...(o.requireLeader ? ({ interceptors: [requireLeaderInterceptor] } as Record<string, unknown>) : {}),
    },
  };
  if (o.tls && (o.tls.ca || o.tls.cert)) {
    options.credentials = {
      // grpc-js uses the system roots when this is null.
      rootCertificate: (o.tls.ca ? await readPem(o.tls.ca, 'CA') : null) as Buffer,
      ...(o.tls.cert && o.tls.key ? { certChain: await readPem(o.tls.cert, 'certificate'), privateKey: await readPem(o.tls.key, 'key') } : {}),
    };
  }
  if (o.auth) {
    if (!o.auth.username) throw new ConfigError('etcd auth needs a username', {});
    options.auth = { username: o.auth.username, password: o.auth.password };
  }
  return new Etcd3(options);
}

/** Wraps an etcd3/gRPC error as EtcdUnavailableError (recoverable) unless it already is an UpdaterError. */
export function asEtcdError(err: unknown, what: string, context: Record<string, unknown> = {}): Error {
  if (err instanceof UpdaterError) return err;
  const message = err instanceof Error ? err.message : String(err);
  // Wrong credentials or missing permissions do not heal by retrying.
  if (err instanceof EtcdAuthenticationFailedError || err instanceof EtcdPermissionDeniedError) {
    return new ConfigError(`${what}: ${message}`, context, { cause: err });
  }
  return new EtcdUnavailableError(`${what}: ${message}`, context, { cause: err });
}
