/**
 * Registration of one upstream (what `haproxy-updater register` runs; the seed's
 * confd-register with a TTL): the upstream key is written under an etcd lease that is kept
 * alive while the process runs. `close()` revokes the lease, so the key disappears at once;
 * if the process dies, etcd deletes it when the TTL runs out.
 *
 * Domains (http only) go to `<svc>/domain`, which all instances of a service share. It is
 * written WITHOUT a lease (one instance stopping must not unroute the others) and merged:
 * the names given are added to the names already there, with a compare-and-swap on the
 * key's mod revision so concurrent registrations do not lose each other's names. Nothing
 * is written when the names are already present. `close()` leaves it in place.
 *
 * All inputs are checked with the registry validators first; on bad input nothing is
 * written (RegistryValueError for a value the watcher would reject, ConfigError for the rest).
 */
import type { Etcd3, Lease } from 'etcd3';
import { ConfigError, RegistryValueError, UpdaterError } from '../errors.js';
import { backoffDelay } from '../backoff.js';
import { logger } from '../log.js';
import type { UpstreamState } from '../model.js';
import { asEtcdError, createEtcdClient, validateEndpoints, type EtcdAuthOptions, type EtcdTlsOptions } from './client.js';
import { formatUpstreamValue, isValidName, normalizePrefix, parseDomains, parseHost, parseIp, parseUpstreamValue, quote } from './parse.js';

const log = logger('watch');

export interface UpstreamRef {
  endpoints: string[];
  /** Registry prefix, e.g. `/haproxy-discover`. */
  prefix: string;
  kind: 'http' | 'tcp';
  /** Service name (`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`). */
  service: string;
  /** Upstream id, unique within the service (same pattern). */
  id: string;
  tls?: EtcdTlsOptions;
  auth?: EtcdAuthOptions;
  /** Deadline of each etcd call. Default 5000 ms. */
  requestTimeoutMs?: number;
}

export interface RegisterOptions extends UpstreamRef {
  /** IPv4 or IPv6 literal. */
  addr: string;
  port: number;
  /** Lease TTL in seconds; the key disappears this long after the process stops keeping it alive. Default 10 (etcd rounds up to its minimum, ~2 s). */
  ttlSec?: number;
  /** 0–256. Default: not written (HAProxy's default 1); the value is then plain `IP:PORT` as the seed wrote it. */
  weight?: number;
  /** Initial state. Default `ready` (not written). */
  state?: UpstreamState;
  /** Host names for the service's `domain` key (http only), merged with those present. */
  domains?: string[];
}

export interface Registration {
  /** The upstream key written. */
  readonly key: string;
  /** The value written (`IP:PORT` or JSON). */
  readonly value: string;
  /** etcd lease id (decimal string). */
  readonly leaseId: string;
  /** Resolves when the lease is lost (expired or revoked behind our back; the key is gone). Never rejects. */
  readonly lost: Promise<void>;
  /** Revokes the lease: the key disappears now. Idempotent. Rejects with EtcdUnavailableError if etcd cannot be reached (the key then expires after the TTL). */
  close(): Promise<void>;
  /** Stops the keepalive WITHOUT revoking (as if the process had died): the key disappears when the TTL runs out. */
  release(): Promise<void>;
}

export const DEFAULT_TTL_SEC = 10;

/** `<prefix>/<kind>-services/<service>/upstreams/<id>`, after validating the parts. */
export function upstreamKey(ref: Pick<UpstreamRef, 'prefix' | 'kind' | 'service' | 'id'>): string {
  return `${serviceKey(ref)}/upstreams/${ref.id}`;
}

function serviceKey(ref: Pick<UpstreamRef, 'prefix' | 'kind' | 'service' | 'id'>): string {
  if (typeof ref.prefix !== 'string' || !ref.prefix.startsWith('/')) throw new ConfigError('prefix must start with "/"', { prefix: ref.prefix });
  const prefix = normalizePrefix(ref.prefix);
  if (ref.kind !== 'http' && ref.kind !== 'tcp') throw new ConfigError(`kind must be http or tcp`, { kind: ref.kind });
  const base = `${prefix}/${ref.kind}-services/${ref.service}`;
  if (!isValidName(ref.service)) throw new RegistryValueError(base, `invalid service name ${quote(String(ref.service))}`);
  if (!isValidName(ref.id)) throw new RegistryValueError(`${base}/upstreams/${ref.id}`, `invalid upstream id ${quote(String(ref.id))}`);
  return base;
}

interface Validated {
  key: string;
  value: string;
  domainKey: string | null;
  domains: string[];
  ttl: number;
}

function validate(o: RegisterOptions): Validated {
  validateEndpoints(o.endpoints, o.tls);
  const key = upstreamKey(o);
  const ip = parseIp(String(o.addr));
  if (!ip.ok) throw new RegistryValueError(key, ip.reason);
  if (!Number.isInteger(o.port) || o.port < 1 || o.port > 65535) throw new RegistryValueError(key, `port ${quote(String(o.port))} is not an integer 1-65535`);
  if (o.weight !== undefined && (!Number.isInteger(o.weight) || o.weight < 0 || o.weight > 256)) throw new RegistryValueError(key, 'weight must be an integer 0-256');
  if (o.state !== undefined && !['ready', 'drain', 'maint'].includes(o.state)) throw new RegistryValueError(key, 'state must be one of ready, drain, maint');
  const value = formatUpstreamValue({ addr: ip.value, port: o.port, weight: o.weight, state: o.state });
  // The watcher must accept exactly what we write.
  const check = parseUpstreamValue(value);
  if (!check.ok) throw new RegistryValueError(key, check.reason);
  const ttl = o.ttlSec ?? DEFAULT_TTL_SEC;
  if (!Number.isInteger(ttl) || ttl < 1 || ttl > 86_400) throw new ConfigError('ttlSec must be an integer 1-86400', { ttlSec: ttl });
  let domainKey: string | null = null;
  const domains: string[] = [];
  if (o.domains && o.domains.length > 0) {
    domainKey = `${serviceKey(o)}/domain`;
    if (o.kind !== 'http') throw new ConfigError('domains apply to http services only', { kind: o.kind });
    for (const d of o.domains) {
      const h = parseHost(String(d));
      if (!h.ok) throw new RegistryValueError(domainKey, h.reason);
      domains.push(h.value);
    }
  }
  return { key, value, domainKey, domains: [...new Set(domains)].sort(), ttl };
}

/** Registers one upstream under a lease kept alive until `close()`. */
export async function registerUpstream(opts: RegisterOptions): Promise<Registration> {
  const v = validate(opts);
  const client = await createEtcdClient(opts);
  let lease: Lease | null = null;
  try {
    if (v.domainKey) await mergeDomains(client, v.domainKey, v.domains);
    lease = client.lease(v.ttl, { autoKeepAlive: true });
    const leaseId = String(await lease.grant());
    const prev = await client.get(v.key).string();
    if (prev !== null && prev !== v.value) log.warn({ key: v.key, previous: prev.slice(0, 200) }, 'replacing an existing registration with the same id');
    await lease.put(v.key).value(v.value).exec();
    log.info({ key: v.key, value: v.value, leaseId, ttlSec: v.ttl }, 'upstream registered');
    return makeRegistration(client, lease, v, leaseId);
  } catch (err) {
    lease?.release();
    client.close();
    throw asEtcdError(err, 'cannot register upstream', { key: v.key });
  }
}

function makeRegistration(client: Etcd3, lease: Lease, v: Validated, leaseId: string): Registration {
  let done = false;
  const lost = new Promise<void>((resolve) => {
    lease.once('lost', (err: Error) => {
      if (done) return resolve();
      done = true;
      log.warn({ err, key: v.key, leaseId }, 'registration lease lost; the key is gone');
      client.close();
      resolve();
    });
  });
  return {
    key: v.key,
    value: v.value,
    leaseId,
    lost,
    async close() {
      if (done) return;
      done = true;
      try {
        await lease.revoke();
        log.info({ key: v.key, leaseId }, 'upstream deregistered (lease revoked)');
      } catch (err) {
        throw asEtcdError(err, 'cannot revoke registration lease; the key expires after its TTL', { key: v.key, leaseId });
      } finally {
        client.close();
      }
    },
    async release() {
      if (done) return;
      done = true;
      lease.release();
      client.close();
      log.info({ key: v.key, leaseId }, 'registration released without revoke; the key expires after its TTL');
    },
  };
}

/** Adds `names` to the shared `domain` key (no lease), compare-and-swap on its mod revision. */
async function mergeDomains(client: Etcd3, key: string, names: string[]): Promise<void> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const res = await client.kv.range({ key: Buffer.from(key) });
    const existing = res.kvs[0];
    let present: string[] = [];
    if (existing) {
      const p = parseDomains(existing.value.toString('utf8'));
      if (p.ok) present = p.value;
      else log.warn({ key, reason: p.reason }, 'existing domain value is invalid; replacing it');
      if (p.ok && names.every((n) => present.includes(n))) return;
    }
    const merged = [...new Set([...present, ...names])].sort().join(',');
    const txn = existing ? client.if(key, 'Mod', '==', existing.mod_revision) : client.if(key, 'Create', '==', 0);
    const r = await txn.then(client.put(key).value(merged)).commit();
    if (r.succeeded) {
      log.info({ key, domains: merged }, 'service domains updated');
      return;
    }
  }
  throw new RegistryValueError(key, 'domain key keeps changing concurrently; gave up after 5 attempts');
}

/** Deletes an upstream key (e.g. one left by a crashed registrar). Resolves true if it existed. */
export async function deregisterUpstream(ref: UpstreamRef): Promise<boolean> {
  validateEndpoints(ref.endpoints, ref.tls);
  const key = upstreamKey(ref);
  const client = await createEtcdClient(ref);
  try {
    const res = await client.delete().key(key).exec();
    const deleted = Number(res.deleted) > 0;
    log.info({ key, deleted }, 'upstream deregistered');
    return deleted;
  } catch (err) {
    throw asEtcdError(err, 'cannot deregister upstream', { key });
  } finally {
    client.close();
  }
}

/**
 * `register` as a service: registers, keeps the lease until `stop` resolves, then removes the
 * upstream. A registrar outlives etcd outages: a lost lease (etcd away longer than the TTL)
 * or an unreachable etcd is retried with backoff; bad input is not (it throws).
 */
export async function keepRegistered(opts: RegisterOptions, stop: Promise<unknown>): Promise<void> {
  const stopped = stop.then(() => 'stop' as const);
  const ref = { service: opts.service, id: opts.id };
  for (let attempt = 0; ; ) {
    let reg: Registration;
    try {
      reg = await registerUpstream(opts);
    } catch (err) {
      if (!(err instanceof UpdaterError && err.recoverable)) throw err;
      const delay = backoffDelay(attempt++);
      log.warn({ err, delayMs: delay }, 'etcd unreachable: registering again shortly');
      if ((await Promise.race([stopped, new Promise<'retry'>((r) => setTimeout(() => r('retry'), delay))])) === 'stop') return;
      continue;
    }
    attempt = 0;
    log.info({ kind: opts.kind, ...ref, ttlSec: opts.ttlSec }, 'registered; keeping the lease alive until SIGINT/SIGTERM');
    const outcome = await Promise.race([stopped, reg.lost.then(() => 'lost' as const)]);
    if (outcome === 'stop') {
      await reg.close();
      break;
    }
    log.warn(ref, 'lease lost (etcd unreachable for longer than the TTL): registering again');
  }
  log.info(ref, 'deregistered');
}
