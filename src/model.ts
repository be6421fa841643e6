import { createHash } from 'node:crypto';

/**
 * The typed registry: what etcd says HAProxy should serve. Produced by src/watch (which
 * validates every value), consumed by src/reconcile and src/render. Every string in here
 * has already been validated against the rules below, so renderers may write it verbatim.
 */

/** Service and upstream ids: `^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$` (design.md). */
export const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

export type UpstreamState = 'ready' | 'drain' | 'maint';

export interface Upstream {
  /** `<id>` of `.../upstreams/<id>`. */
  readonly id: string;
  /** IPv4 or IPv6 literal, canonical form, IPv6 without brackets. */
  readonly addr: string;
  /** 1–65535. */
  readonly port: number;
  /** 0–256, HAProxy absolute weight. Default 1 (HAProxy's default). */
  readonly weight: number;
  /** Default `ready`. */
  readonly state: UpstreamState;
}

export type Balance = 'roundrobin' | 'leastconn' | 'first' | 'source' | 'static-rr' | 'random';
/** Every Balance, in the order error messages list them. */
export const BALANCES: readonly Balance[] = Object.freeze(['roundrobin', 'leastconn', 'first', 'source', 'static-rr', 'random']);

/** Per-service settings from `<prefix>/{http,tcp}-services/<svc>/options` (JSON). */
export interface ServiceOptions {
  /** Load-balancing algorithm. Default `roundrobin`. */
  readonly balance: Balance;
  /** HTTP health-check path (`option httpchk GET <path>`); null = TCP connect check. Default null. http services only. */
  readonly healthPath: string | null;
  /** Minimum number of pre-allocated server slots in the backend. Default 4 (1–1024). */
  readonly minSlots: number;
  /** Per-server `maxconn`; null = unlimited. Default null. */
  readonly maxconn: number | null;
}

export const DEFAULT_OPTIONS: ServiceOptions = Object.freeze({
  balance: 'roundrobin',
  healthPath: null,
  minSlots: 4,
  maxconn: null,
});

interface ServiceBase {
  readonly name: string;
  /** Keyed by upstream id. */
  readonly upstreams: ReadonlyMap<string, Upstream>;
  readonly options: ServiceOptions;
}

export interface HttpService extends ServiceBase {
  readonly kind: 'http';
  /** Lower-case DNS names, no trailing dot, unique, sorted. */
  readonly domains: readonly string[];
  /** Extra routing rule: requests whose URL matches go to this service. Validated PCRE-safe text or null. */
  readonly urlReg: string | null;
  /** TLS passthrough routed by SNI; the upstreams terminate TLS. */
  readonly sslPassthrough: boolean;
}

export interface TcpService extends ServiceBase {
  readonly kind: 'tcp';
  /** Ports to listen on, unique, sorted. */
  readonly ports: readonly number[];
}

export type Service = HttpService | TcpService;

export interface Registry {
  /** etcd revision this model reflects (decimal string; etcd revisions are int64). */
  readonly revision: string;
  readonly http: ReadonlyMap<string, HttpService>;
  readonly tcp: ReadonlyMap<string, TcpService>;
}

/** A rejected registry entry: the key and why. */
export interface Rejection {
  readonly key: string;
  readonly reason: string;
  /** A lost claim (domain or tcp port of another service): the key that keeps it. */
  readonly claimedBy?: string;
}

export const EMPTY_REGISTRY: Registry = Object.freeze({
  revision: '0',
  http: new Map<string, HttpService>(),
  tcp: new Map<string, TcpService>(),
});

/**
 * HAProxy backend name of a service. http and tcp services live in separate namespaces in
 * the registry, so the kind is part of the name; a passthrough service is a TCP-mode
 * backend, so toggling `sslpass` yields a different backend (a structural change anyway).
 */
export function backendName(svc: Pick<Service, 'kind' | 'name'> & { sslPassthrough?: boolean }): string {
  if (svc.kind === 'tcp') return `tcp-${svc.name}`;
  return svc.sslPassthrough ? `tls-${svc.name}` : `http-${svc.name}`;
}

/** The http service whose backend is the `default_backend` (as in the seed's template). */
export const DEFAULT_SERVICE = 'default';

// ------------------------------------------------------------------ value rules (one owner each)

/** Longest accepted `healthPath`. */
export const MAX_HEALTH_PATH_LENGTH = 256;
const HEALTH_PATH_RE = /^\/[\x21-\x7e]*$/;
// HAProxy 2.6 refuses `'` and `"` in `option httpchk GET <path>` (checked with haproxy -c),
// reads `#` as a comment and `\` as an escape, expands `$` in quoted words; `;` and the
// backtick are refused by the template's word filter too.
const HEALTH_PATH_UNSAFE = /[#;\\'"$`]/;

/**
 * The healthPath rule, for the registry parser and the template alike: starts with `/`,
 * printable ASCII without whitespace, `#`, `;`, `\`, quotes, `$` or backtick, at most
 * MAX_HEALTH_PATH_LENGTH characters. Returns why `value` is refused, or null.
 */
export function healthPathProblem(value: string): string | null {
  if (value.length > MAX_HEALTH_PATH_LENGTH) return `longer than ${MAX_HEALTH_PATH_LENGTH}`;
  if (!HEALTH_PATH_RE.test(value) || HEALTH_PATH_UNSAFE.test(value)) return 'must start with / and be printable ASCII without whitespace, # ; \\ \' " $ `';
  return null;
}

/** `addr:port`, an IPv6 address in brackets (`[::1]:80`): what HAProxy, etcd values and logs take. */
export function formatAddrPort(addr: string, port: number): string {
  return addr.includes(':') ? `[${addr}]:${port}` : `${addr}:${port}`;
}

/** Upper bound on slots per backend (a typo in capacity must not render 10^6 servers). */
export const MAX_SLOTS = 4096;

/** Smallest power of two ≥ n (1 for n ≤ 1). */
export function nextPowerOfTwo(n: number): number {
  if (!(n > 1)) return 1;
  return 2 ** Math.ceil(Math.log2(Math.ceil(n)));
}

/**
 * The slot capacity rule: template slots of a backend = max(minSlots, next power of two ≥
 * max(needed, keep)), at most MAX_SLOTS. Growing geometrically makes scaling 1 → N cost at
 * most O(log N) reloads. `keep` is the highest slot index that must survive a reload (a
 * slot holding a desired upstream), so a render never cuts a serving upstream off.
 */
export function slotCapacity(needed: number, minSlots: number, keep = 0): number {
  const min = Math.max(1, Math.floor(minSlots));
  return Math.min(MAX_SLOTS, Math.max(min, nextPowerOfTwo(Math.max(0, needed, keep))));
}

/** Prefix of the `server-template` slot names (`s1`..`sN`). */
export const SLOT_PREFIX = 's';
/**
 * Name of the config's one (named) defaults section: every proxy of the file inherits it,
 * and on 3.4+ `add backend <be> from <this>` gives a runtime-added backend the same settings.
 */
export const NAMED_DEFAULTS = 'svc-defaults';
/** Prefix of runtime-added overflow servers (`x1`..), which do not survive a reload. */
export const OVERFLOW_PREFIX = 'x';

/**
 * The part of a service that lives in haproxy.cfg (everything that needs a reload to
 * change): kind, backend mode, routing rule, listening ports, options. Upstreams and
 * domains are runtime state and are not part of it. Canonical JSON, stable key order.
 * src/render writes `sha256(structureKey(svc))` (first 16 hex chars) as a comment line
 * `# structure <hash>` in each backend so the planner can compare after a restart.
 */
export function structureKey(svc: Service): string {
  const o = svc.options;
  const opts = [o.balance, o.healthPath, o.minSlots, o.maxconn];
  return svc.kind === 'tcp'
    ? JSON.stringify(['tcp', svc.name, svc.ports, opts])
    : JSON.stringify(['http', svc.name, svc.sslPassthrough, svc.urlReg, opts]);
}

/** 16 hex chars of sha256(structureKey(svc)): what `# structure <hash>` lines carry. */
export function structureHash(svc: Service): string {
  return createHash('sha256').update(structureKey(svc)).digest('hex').slice(0, 16);
}

// ------------------------------------------------------------------ server admin state

/** `srv_admin_state` flags (HAProxy `enum srv_admin`). */
export const SRV_ADMIN = Object.freeze({
  /** Forced into maintenance (`state maint`). */
  FMAINT: 0x01,
  /** Maintenance inherited from a tracked server. */
  IMAINT: 0x02,
  /** `disabled` in the config; stays set after `state ready`, so it alone is NOT maintenance. */
  CMAINT: 0x04,
  /** Forced drain (`state drain`). */
  FDRAIN: 0x08,
  /** Drain inherited from a tracked server. */
  IDRAIN: 0x10,
  /** Maintenance because address resolution failed. */
  RMAINT: 0x20,
  /** FQDN set from the CLI. */
  HMAINT: 0x40,
});

/** `srv_op_state` values. */
export const SRV_OP = Object.freeze({ STOPPED: 0, STARTING: 1, RUNNING: 2, STOPPING: 3 });

/** Check state flag CHK_ST_ENABLED (`show servers state` srv_check_state). */
export const CHK_ST_ENABLED = 0x04;

/** Maintenance of any kind that stops traffic (forced, inherited or resolution); CMAINT alone is not (mask 0x23). */
export function adminIsMaint(admin: number): boolean {
  return (admin & (SRV_ADMIN.FMAINT | SRV_ADMIN.IMAINT | SRV_ADMIN.RMAINT)) !== 0;
}

/** Draining (forced or inherited). A server can be both draining and in maintenance. */
export function adminIsDrain(admin: number): boolean {
  return (admin & (SRV_ADMIN.FDRAIN | SRV_ADMIN.IDRAIN)) !== 0;
}
