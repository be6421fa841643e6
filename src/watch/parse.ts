/**
 * etcd keys/values → typed `Registry` (design.md, "Registry contract"). Pure: no I/O, no
 * logging; the caller (RegistryWatcher) logs rejections and ignored keys.
 *
 * Every string that reaches the model passed a validator below. The model is written
 * verbatim into haproxy.cfg, map/pattern files and Runtime API commands, where a newline,
 * `;`, `#`, space or backslash is an injection (runtime notes §8), so the validators are
 * allow-lists (ASCII character classes), never deny-lists — with one documented exception,
 * `url_reg` (see `parseUrlReg`).
 *
 * A bad entry rejects that entry only (a `Rejection {key, reason}`); the rest applies.
 */
import { isIPv6 } from 'node:net';
import {
  BALANCES,
  DEFAULT_OPTIONS,
  MAX_HEALTH_PATH_LENGTH,
  NAME_RE,
  formatAddrPort,
  healthPathProblem,
  type Balance,
  type HttpService,
  type Registry,
  type Rejection,
  type ServiceOptions,
  type TcpService,
  type Upstream,
  type UpstreamState,
} from '../model.js';
import type { AddressPolicy } from './trust.js';

/** Result of a validator: the canonical value, or why it was refused. */
export type Parsed<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly reason: string };

const ok = <T>(value: T): Parsed<T> => ({ ok: true, value });
const bad = (reason: string): { readonly ok: false; readonly reason: string } => ({ ok: false, reason });

/** Values larger than this (UTF-8 bytes) are rejected before any other check. */
export const MAX_VALUE_BYTES = 4096;
/** Longest accepted `url_reg` (characters). HAProxy reads pattern files line by line into a buffer; long lines would be split into several patterns. */
export const MAX_URL_REG_LENGTH = 1024;
// The rules shared with the renderer live in the model; re-exported for this module's callers.
export { BALANCES, MAX_HEALTH_PATH_LENGTH, formatAddrPort };
/** Upper bound of `options.maxconn`. */
export const MAX_MAXCONN = 1_000_000;
/** Bounds of `options.minSlots`. */
export const MIN_SLOTS_RANGE = Object.freeze({ min: 1, max: 1024 });

export const UPSTREAM_STATES: readonly UpstreamState[] = Object.freeze(['ready', 'drain', 'maint']);

/** A short, escaped excerpt of an untrusted value for a rejection reason (never the whole value). */
export function quote(value: string, max = 48): string {
  return JSON.stringify(value.length > max ? value.slice(0, max) + '…' : value);
}

/** `^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$` — service and upstream ids. */
export function isValidName(name: string): boolean {
  return NAME_RE.test(name);
}

// ------------------------------------------------------------------------------ hosts

const LABEL_RE = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

/**
 * One DNS host name → lower case, trailing dot stripped. Labels 1–63 of `[a-z0-9-]`, not
 * starting or ending with `-`, total ≤ 253, last label not all-numeric (that is an IP).
 * Punycode (`xn--…`) is fine. The character check runs on the raw value BEFORE lower-casing:
 * `toLowerCase()` maps some non-ASCII letters to ASCII (KELVIN SIGN U+212A → `k`), so a
 * look-alike must be refused first, not normalised into a valid name.
 */
export function parseHost(value: string): Parsed<string> {
  if (value.length === 0) return bad('empty host name');
  if (!/^[A-Za-z0-9.-]+$/.test(value)) {
    return bad(`host name ${quote(value)} contains characters outside [A-Za-z0-9.-] (unicode look-alikes must be punycode)`);
  }
  let host = value.toLowerCase();
  if (host.endsWith('.')) host = host.slice(0, -1);
  if (host.length === 0) return bad('empty host name');
  if (host.length > 253) return bad(`host name longer than 253 characters`);
  const labels = host.split('.');
  for (const label of labels) {
    if (!LABEL_RE.test(label)) return bad(`host name ${quote(host)} has an invalid label ${quote(label)}`);
  }
  if (/^[0-9]+$/.test(labels[labels.length - 1] ?? '')) return bad(`host name ${quote(host)} has a numeric top-level label (an IP is not a domain)`);
  return ok(host);
}

/** `domain` value: host names separated by commas and/or spaces → unique, sorted. Any bad name rejects the whole value. */
export function parseDomains(value: string): Parsed<string[]> {
  const tokens = value.split(/[ ,]+/).filter((t) => t !== '');
  const out = new Set<string>();
  for (const token of tokens) {
    const h = parseHost(token);
    if (!h.ok) return h;
    out.add(h.value);
  }
  return ok([...out].sort());
}

// ------------------------------------------------------------------------------ addresses

const OCTET = '(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])';
const IPV4_RE = new RegExp(`^${OCTET}(?:\\.${OCTET}){3}$`);

/**
 * An IPv4 or IPv6 literal → canonical text (IPv4 dotted quad without leading zeros; IPv6
 * RFC 5952 lower-case compressed, no brackets, no zone id). ASCII digits only (fullwidth
 * digits are refused). The unspecified addresses `0.0.0.0` and `::` are refused: HAProxy
 * gives them special meaning (an unset slot / the client's destination).
 */
export function parseIp(value: string): Parsed<string> {
  if (IPV4_RE.test(value)) {
    return value === '0.0.0.0' ? bad('unspecified address 0.0.0.0') : ok(value);
  }
  if (value.length <= 45 && /^[0-9A-Fa-f:.]+$/.test(value) && value.includes(':') && isIPv6(value)) {
    // WHATWG URL serialises IPv6 hosts in RFC 5952 form.
    const canonical = new URL(`http://[${value}]/`).hostname.slice(1, -1);
    return canonical === '::' ? bad('unspecified address ::') : ok(canonical);
  }
  return bad(`${quote(value)} is not an IPv4 or IPv6 address literal`);
}

/** `1`–`65535`, ASCII decimal, no sign, no leading zero. */
export function parsePort(value: string): Parsed<number> {
  if (!/^[1-9][0-9]{0,4}$/.test(value)) return bad(`port ${quote(value)} is not an integer 1-65535`);
  const n = Number(value);
  return n <= 65535 ? ok(n) : bad(`port ${n} is out of range 1-65535`);
}

/** `IP:PORT` (IPv4) or `[IPv6]:PORT`. */
export function parseAddrPort(value: string): Parsed<{ addr: string; port: number }> {
  let host: string;
  let port: string;
  let v6 = false;
  if (value.startsWith('[')) {
    const m = /^\[([^\]]*)\]:([^:]*)$/.exec(value);
    if (!m) return bad(`${quote(value)} is not [IPv6]:PORT`);
    [host, port, v6] = [m[1] ?? '', m[2] ?? '', true];
  } else {
    const m = /^([^:]*):([^:]*)$/.exec(value);
    if (!m) {
      return value.split(':').length > 2 ? bad(`${quote(value)}: IPv6 addresses need brackets, [addr]:port`) : bad(`${quote(value)} is not IP:PORT`);
    }
    [host, port] = [m[1] ?? '', m[2] ?? ''];
  }
  const ip = parseIp(host);
  if (!ip.ok) return ip;
  if (v6 !== ip.value.includes(':')) return bad(`${quote(value)}: only IPv6 addresses go in brackets`);
  const p = parsePort(port);
  if (!p.ok) return p;
  return ok({ addr: ip.value, port: p.value });
}

export type UpstreamValue = Omit<Upstream, 'id'>;

const UPSTREAM_KEYS = new Set(['addr', 'weight', 'state']);

/**
 * An upstream value: `IP:PORT`, `[IPv6]:PORT`, or JSON
 * `{"addr":"IP:PORT","weight":0-256,"state":"ready"|"drain"|"maint"}` (`addr` required,
 * unknown keys refused so that a typo is not silently ignored). Defaults: weight 1, ready.
 */
export function parseUpstreamValue(value: string): Parsed<UpstreamValue> {
  if (!value.startsWith('{')) {
    const ap = parseAddrPort(value);
    return ap.ok ? ok({ ...ap.value, weight: 1, state: 'ready' }) : ap;
  }
  const obj = parseJsonObject(value);
  if (!obj.ok) return obj;
  for (const k of Object.keys(obj.value)) {
    if (!UPSTREAM_KEYS.has(k)) return bad(`unknown upstream field ${quote(k)} (allowed: addr, weight, state)`);
  }
  const { addr, weight = 1, state = 'ready' } = obj.value;
  if (typeof addr !== 'string') return bad('upstream JSON needs "addr": "IP:PORT"');
  const ap = parseAddrPort(addr);
  if (!ap.ok) return ap;
  if (typeof weight !== 'number' || !Number.isInteger(weight) || weight < 0 || weight > 256) return bad('weight must be an integer 0-256');
  if (typeof state !== 'string' || !(UPSTREAM_STATES as readonly string[]).includes(state)) return bad('state must be one of ready, drain, maint');
  return ok({ ...ap.value, weight, state: state as UpstreamState });
}

/** Serialises an upstream value: plain `IP:PORT` when weight and state are the defaults (what the seed's tooling reads), JSON otherwise. */
export function formatUpstreamValue(u: { addr: string; port: number; weight?: number; state?: UpstreamState }): string {
  const addr = formatAddrPort(u.addr, u.port);
  if ((u.weight ?? 1) === 1 && (u.state ?? 'ready') === 'ready') return addr;
  const out: Record<string, unknown> = { addr };
  if (u.weight !== undefined) out.weight = u.weight;
  if (u.state !== undefined && u.state !== 'ready') out.state = u.state;
  return JSON.stringify(out);
}

// ------------------------------------------------------------------------------ tcp ports

/** `ports` value: `80`, `80,443`, spaces around commas tolerated → unique, sorted. */
export function parsePorts(value: string): Parsed<number[]> {
  if (value.trim() === '') return bad('no ports');
  const out = new Set<number>();
  for (const raw of value.split(',')) {
    const token = raw.replace(/^ +| +$/g, '');
    if (token === '') return bad('empty entry in port list');
    const p = parsePort(token);
    if (!p.ok) return p;
    out.add(p.value);
  }
  return ok([...out].sort((a, b) => a - b));
}

// ------------------------------------------------------------------------------ options

const OPTION_KEYS = new Set(['balance', 'healthPath', 'minSlots', 'maxconn']);

/**
 * `options` JSON `{ balance?, healthPath?, minSlots?, maxconn? }` (model.ts ServiceOptions)
 * with DEFAULT_OPTIONS for missing keys. Unknown keys reject the entry. `healthPath`: the
 * model's rule (healthPathProblem, which the template applies too); http services only.
 */
export function parseOptions(value: string, kind: 'http' | 'tcp' = 'http'): Parsed<ServiceOptions> {
  const obj = parseJsonObject(value);
  if (!obj.ok) return obj;
  for (const k of Object.keys(obj.value)) {
    if (!OPTION_KEYS.has(k)) return bad(`unknown option ${quote(k)} (allowed: balance, healthPath, minSlots, maxconn)`);
  }
  const o = obj.value;
  const balance = o.balance ?? DEFAULT_OPTIONS.balance;
  if (typeof balance !== 'string' || !(BALANCES as readonly string[]).includes(balance)) return bad(`balance must be one of ${BALANCES.join(', ')}`);
  const healthPath = o.healthPath ?? DEFAULT_OPTIONS.healthPath;
  if (healthPath !== null) {
    if (typeof healthPath !== 'string') return bad('healthPath must be a string or null');
    if (kind === 'tcp') return bad('healthPath applies to http services only');
    const problem = healthPathProblem(healthPath);
    if (problem !== null) return bad(`healthPath ${quote(healthPath)} ${problem}`);
  }
  const minSlots = o.minSlots ?? DEFAULT_OPTIONS.minSlots;
  if (typeof minSlots !== 'number' || !Number.isInteger(minSlots) || minSlots < MIN_SLOTS_RANGE.min || minSlots > MIN_SLOTS_RANGE.max) {
    return bad(`minSlots must be an integer ${MIN_SLOTS_RANGE.min}-${MIN_SLOTS_RANGE.max}`);
  }
  const maxconn = o.maxconn === undefined ? DEFAULT_OPTIONS.maxconn : o.maxconn;
  if (maxconn !== null && (typeof maxconn !== 'number' || !Number.isInteger(maxconn) || maxconn < 1 || maxconn > MAX_MAXCONN)) {
    return bad(`maxconn must be null or an integer 1-${MAX_MAXCONN}`);
  }
  return ok(Object.freeze({ balance: balance as Balance, healthPath, minSlots, maxconn }));
}

// ------------------------------------------------------------------------------ url_reg

/**
 * `url_reg`: a regular expression matched against the URL. It is written by src/render as
 * one line of a pattern file (`-f file`), never into a config line, so config syntax
 * characters (space, `#` inside, `;`, `\`, quotes) are harmless and are legitimate regex
 * syntax. What can break a pattern file line is checked:
 *  - control characters (any Unicode Cc, incl. NUL, TAB, CR, LF, DEL, C1) and U+2028/2029:
 *    a line break would split the value into two patterns; NUL ends the line in C;
 *  - a leading `#` (the line is a comment, the rule would silently vanish) or leading blank
 *    (HAProxy strips leading spaces/tabs, changing the regex);
 *  - empty (empty lines are skipped) and longer than MAX_URL_REG_LENGTH (HAProxy reads
 *    lines into a fixed buffer; an over-long line becomes several patterns);
 *  - it must compile as a JavaScript RegExp: an approximation of PCRE (PCRE-only syntax
 *    such as `(?i)` is refused; a JS-valid regex PCRE refuses fails `haproxy -c`, which
 *    quarantines that service and applies the rest: src/reload/quarantine.ts).
 */
export function parseUrlReg(value: string): Parsed<string> {
  if (value.length === 0) return bad('empty url_reg');
  if (value.length > MAX_URL_REG_LENGTH) return bad(`url_reg longer than ${MAX_URL_REG_LENGTH} characters`);
  if (/[\p{Cc}\u2028\u2029]/u.test(value)) return bad('url_reg contains control characters or line breaks');
  if (/^[ #]/.test(value)) return bad('url_reg must not start with a space or "#" (pattern file syntax)');
  try {
    new RegExp(value);
  } catch (err) {
    return bad(`url_reg does not compile as a regular expression: ${(err as Error).message.slice(0, 120)}`);
  }
  return ok(value);
}

// ------------------------------------------------------------------------------ flags

const FALSE_FLAGS = new Set(['', '0', 'false', 'no', 'off']);

/** `sslpass`: present and not `0`/`false`/`no`/`off`/empty (case-insensitive, trimmed) = true. */
export function isTruthyFlag(value: string): boolean {
  return !FALSE_FLAGS.has(value.trim().toLowerCase());
}

// ------------------------------------------------------------------------------ helpers

function parseJsonObject(value: string): Parsed<Record<string, unknown>> {
  let v: unknown;
  try {
    v = JSON.parse(value);
  } catch {
    return bad('invalid JSON');
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return bad('JSON value must be an object');
  return ok(v as Record<string, unknown>);
}

/** Rejects values over MAX_VALUE_BYTES or not valid UTF-8 (decoded with U+FFFD). */
function checkValue(value: string): string | null {
  if (value.length > MAX_VALUE_BYTES || Buffer.byteLength(value, 'utf8') > MAX_VALUE_BYTES) return `value larger than ${MAX_VALUE_BYTES} bytes`;
  if (value.includes('\uFFFD')) return 'value is not valid UTF-8';
  return null;
}

// ------------------------------------------------------------------------------ registry

const HTTP_FIELDS = new Set(['domain', 'url_reg', 'sslpass', 'options']);
const TCP_FIELDS = new Set(['ports', 'options']);

/** Strips trailing slashes: `/haproxy-discover/` → `/haproxy-discover`. */
export function normalizePrefix(prefix: string): string {
  return prefix.replace(/\/+$/, '');
}

/** One key of the registry. `createRevision`: etcd's `create_revision` (decides claims; missing = last). */
export interface RegistryKv {
  key: string;
  value: string;
  createRevision?: string;
}

interface Draft {
  kind: 'http' | 'tcp';
  name: string;
  fields: Map<string, RegistryKv>;
  upstreams: Map<string, RegistryKv>;
}

export interface ParseOptions {
  /** `--upstream-cidrs`: addresses it refuses are rejected like any bad entry. Default none (no address rule). */
  addressPolicy?: AddressPolicy | null;
}

/** Fields whose value claims something shared by all services; their etcd create_revision decides who keeps it. */
const CLAIM_FIELDS = new Set(['domain', 'ports']);

/** Whether `key` holds a claim (`.../domain`, `.../ports`): the watcher keeps create_revision only for these. */
export function isClaimKey(key: string): boolean {
  const slash = key.lastIndexOf('/');
  return CLAIM_FIELDS.has(key.slice(slash + 1));
}

export interface ParseResult {
  registry: Registry;
  /** Sorted by key. */
  rejections: Rejection[];
  /** Keys under the prefix outside the contract (not rejections; the caller logs them at debug). */
  ignored: string[];
}

const MAX_KEY_IN_REJECTION = 512;
const shortKey = (k: string) => (k.length > MAX_KEY_IN_REJECTION ? k.slice(0, MAX_KEY_IN_REJECTION) + '…' : k);

/**
 * Builds the Registry from all key/values under `prefix` (e.g. from one etcd range + applied
 * watch events). A service exists when any contract key exists under a valid service name
 * (even if that key's value is rejected): a service without valid upstreams is still a
 * service. Keys outside the contract are listed in `ignored`.
 *
 * Duplicate addr:port within a service: the lexicographically first upstream id keeps it
 * (deterministic, independent of input order). An upstream address `opts.addressPolicy`
 * refuses is rejected. A domain (within one map: Host or SNI) or tcp port claimed by
 * several services belongs to the claim whose key etcd created first (`createRevision`,
 * stable across restarts and resyncs; ties by service name); the later claims lose that
 * domain or port with a rejection naming the winner's key (`resolveClaims`).
 */
export function parseRegistry(kvs: Iterable<RegistryKv>, prefix: string, revision: string, opts: ParseOptions = {}): ParseResult {
  const root = normalizePrefix(prefix) + '/';
  const rejections: Rejection[] = [];
  const ignored: string[] = [];
  const reject = (key: string, reason: string, claimedBy?: string) =>
    rejections.push(claimedBy === undefined ? { key: shortKey(key), reason } : { key: shortKey(key), reason, claimedBy: shortKey(claimedBy) });
  const drafts = new Map<string, Draft>();

  for (const kv of kvs) {
    const { key, value } = kv;
    if (!key.startsWith(root)) {
      ignored.push(key);
      continue;
    }
    const parts = key.slice(root.length).split('/');
    const [group, svc, field, id] = parts;
    const kind = group === 'http-services' ? 'http' : group === 'tcp-services' ? 'tcp' : null;
    if (kind === null || svc === undefined || field === undefined) {
      ignored.push(key);
      continue;
    }
    const isUpstream = field === 'upstreams' && parts.length === 4 && id !== undefined && id !== '';
    const isField = parts.length === 3 && (kind === 'http' ? HTTP_FIELDS : TCP_FIELDS).has(field);
    if (!isUpstream && !isField) {
      ignored.push(key);
      continue;
    }
    if (!isValidName(svc)) {
      reject(key, `invalid service name ${quote(svc)} (must match ${NAME_RE.source})`);
      continue;
    }
    const draftKey = `${kind}/${svc}`;
    let draft = drafts.get(draftKey);
    if (!draft) {
      draft = { kind, name: svc, fields: new Map(), upstreams: new Map() };
      drafts.set(draftKey, draft);
    }
    if (isUpstream && !isValidName(id)) {
      reject(key, `invalid upstream id ${quote(id)} (must match ${NAME_RE.source})`);
      continue;
    }
    const valueProblem = checkValue(value);
    if (valueProblem) {
      reject(key, valueProblem);
      continue;
    }
    if (isUpstream) draft.upstreams.set(id, kv);
    else draft.fields.set(field, kv);
  }

  const http = new Map<string, HttpService>();
  const tcp = new Map<string, TcpService>();
  const sorted = [...drafts.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));

  for (const d of sorted) {
    const upstreams = buildUpstreams(d, reject, opts.addressPolicy ?? null);
    // An optional field: its parsed value, or `fallback` when absent or rejected.
    const field = <T>(name: string, parse: (v: string) => Parsed<T>, fallback: T, onReject = ''): T => {
      const f = d.fields.get(name);
      if (!f) return fallback;
      const p = parse(f.value);
      if (p.ok) return p.value;
      reject(f.key, `${p.reason}${onReject}`);
      return fallback;
    };
    const options = field<ServiceOptions>('options', (v) => parseOptions(v, d.kind), DEFAULT_OPTIONS, '; using defaults');
    if (d.kind === 'http') {
      const domains = field<string[]>('domain', parseDomains, []);
      const urlReg = field<string | null>('url_reg', parseUrlReg, null);
      const ssl = d.fields.get('sslpass');
      const sslPassthrough = ssl ? isTruthyFlag(ssl.value) : false;
      http.set(d.name, { kind: 'http', name: d.name, upstreams, options, domains, urlReg, sslPassthrough });
    } else {
      const ports = field<number[]>('ports', parsePorts, []);
      tcp.set(d.name, { kind: 'tcp', name: d.name, upstreams, options, ports });
    }
  }
  for (const r of settleClaims(http, tcp, (kind, name) => drafts.get(`${kind}/${name}`)?.fields.get(kind === 'http' ? 'domain' : 'ports'))) rejections.push(r);
  for (const [name, svc] of http) if (!Object.isFrozen(svc)) http.set(name, Object.freeze({ ...svc, domains: Object.freeze(svc.domains) }));
  for (const [name, svc] of tcp) if (!Object.isFrozen(svc)) tcp.set(name, Object.freeze({ ...svc, ports: Object.freeze(svc.ports) }));

  rejections.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : a.reason < b.reason ? -1 : a.reason > b.reason ? 1 : 0));
  return { registry: Object.freeze({ revision, http, tcp }), rejections, ignored };
}

/**
 * The one place claims are settled, for the full parse and the incremental builder alike:
 * each contested domain or tcp port goes to the first claimant (resolveClaims), and every
 * losing service is replaced in `http`/`tcp` (frozen) by a copy without that value. Losers
 * keep their other domains/ports. `claimKv`: the claiming key of a service (`.../domain`,
 * `.../ports`) with its create_revision. Returns the rejections of the lost claims.
 */
export function settleClaims(
  http: Map<string, HttpService>,
  tcp: Map<string, TcpService>,
  claimKv: (kind: 'http' | 'tcp', name: string) => RegistryKv | undefined,
): Rejection[] {
  const claims: Claim[] = [];
  for (const svc of http.values()) {
    const kv = svc.domains.length ? claimKv('http', svc.name) : undefined;
    if (kv) claims.push({ space: svc.sslPassthrough ? 'sni' : 'hosts', kind: 'http', service: svc.name, kv, values: svc.domains });
  }
  for (const svc of tcp.values()) {
    const kv = svc.ports.length ? claimKv('tcp', svc.name) : undefined;
    if (kv) claims.push({ space: 'tcp', kind: 'tcp', service: svc.name, kv, values: svc.ports.map(String) });
  }
  const rejections: Rejection[] = [];
  const lostBy = new Map<string, Set<string>>();
  for (const lost of resolveClaims(claims)) {
    rejections.push({ key: shortKey(lost.claim.kv.key), reason: lost.reason, claimedBy: shortKey(lost.winner.kv.key) });
    const id = `${lost.claim.kind}/${lost.claim.service}`;
    let set = lostBy.get(id);
    if (!set) lostBy.set(id, (set = new Set()));
    set.add(lost.value);
  }
  for (const [id, values] of lostBy) {
    const [kind, name] = [id.slice(0, id.indexOf('/')), id.slice(id.indexOf('/') + 1)];
    if (kind === 'http') {
      const svc = http.get(name)!;
      http.set(name, Object.freeze({ ...svc, domains: Object.freeze(svc.domains.filter((x) => !values.has(x))) }));
    } else {
      const svc = tcp.get(name)!;
      tcp.set(name, Object.freeze({ ...svc, ports: Object.freeze(svc.ports.filter((p) => !values.has(String(p)))) }));
    }
  }
  return rejections;
}

/** One service's claim on values of a shared space (Host-map domains, SNI-map domains, tcp ports). */
export interface Claim {
  readonly space: 'hosts' | 'sni' | 'tcp';
  readonly kind: 'http' | 'tcp';
  readonly service: string;
  /** The claiming key (`.../domain` or `.../ports`) with its create_revision. */
  readonly kv: RegistryKv;
  readonly values: readonly string[];
}

export interface LostClaim {
  readonly claim: Claim;
  readonly value: string;
  readonly winner: Claim;
  readonly reason: string;
}

/** create_revision as a sortable number; a missing or malformed one sorts last. */
function createdAt(c: Claim): bigint {
  const r = c.kv.createRevision;
  return r !== undefined && /^[0-9]+$/.test(r) ? BigInt(r) : BigInt(Number.MAX_SAFE_INTEGER) ** 2n;
}

/**
 * Each contested value goes to the claim created first in etcd (ties: service name): a
 * domain does not move to another service because its name sorts earlier, nor after a
 * restart or a resync. Pure; returns the losing (claim, value) pairs.
 */
export function resolveClaims(claims: readonly Claim[]): LostClaim[] {
  const order = [...claims].sort((a, b) => {
    const ca = createdAt(a);
    const cb = createdAt(b);
    return ca < cb ? -1 : ca > cb ? 1 : a.service < b.service ? -1 : a.service > b.service ? 1 : 0;
  });
  const owner = new Map<string, Claim>();
  const lost: LostClaim[] = [];
  for (const claim of order) {
    for (const value of claim.values) {
      const id = `${claim.space}\n${value}`;
      const winner = owner.get(id);
      if (!winner) {
        owner.set(id, claim);
        continue;
      }
      const what = claim.space === 'tcp' ? `tcp port ${value}` : `domain ${value}${claim.space === 'sni' ? ' (TLS passthrough)' : ''}`;
      const when = (c: Claim) => (c.kv.createRevision ? `created at revision ${c.kv.createRevision}` : 'revision unknown');
      lost.push({
        claim,
        value,
        winner,
        reason: `${what} is already claimed by ${winner.kv.key} (${when(winner)}, before this key, ${when(claim)}); the first claimant keeps it`,
      });
    }
  }
  return lost;
}

function buildUpstreams(d: Draft, reject: (key: string, reason: string) => void, policy: AddressPolicy | null): ReadonlyMap<string, Upstream> {
  const ids = [...d.upstreams.keys()].sort();
  const out = new Map<string, Upstream>();
  const byAddr = new Map<string, string>();
  for (const id of ids) {
    const { key, value } = d.upstreams.get(id)!;
    const p = parseUpstreamValue(value);
    if (!p.ok) {
      reject(key, p.reason);
      continue;
    }
    const refused = policy?.check(p.value.addr, p.value.port) ?? null;
    if (refused !== null) {
      reject(key, refused);
      continue;
    }
    const ap = formatAddrPort(p.value.addr, p.value.port);
    const first = byAddr.get(ap);
    if (first !== undefined) {
      reject(key, `duplicate address ${ap}: already used by upstream ${quote(first)} of this service`);
      continue;
    }
    byAddr.set(ap, id);
    out.set(id, Object.freeze({ id, ...p.value }));
  }
  return out;
}
