/**
 * Which addresses an upstream may have (`--upstream-cidrs`): the one owner of CIDR matching.
 * The registry is writable by every service that registers itself, so an entry must not be
 * able to point HAProxy at the cloud metadata service (169.254.169.254), a multicast group,
 * or the updater's own HTTP endpoint.
 *
 * Rules, in order:
 *  1. never: unspecified (0.0.0.0, ::), multicast (224.0.0.0/4, ff00::/8), the `--listen`
 *     address of the updater;
 *  2. link-local (169.254.0.0/16, fe80::/10): only when an allowed CIDR lies inside the
 *     link-local range itself (so `any` or `0.0.0.0/0` does not open the metadata address);
 *  3. otherwise the address must be inside one allowed CIDR.
 * The default allow list is `loopback,private`: a public upstream is rejected with a message
 * naming the flag, so an operator who has them adds their range (or `any`).
 * IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are judged as the IPv4 address they carry.
 * Pure: no I/O.
 */
import { isIP } from 'node:net';

export interface Cidr {
  readonly family: 4 | 6;
  /** Network address as an integer (host bits zero). */
  readonly net: bigint;
  readonly bits: number;
  /** As written after canonicalisation, e.g. `10.0.0.0/8`. */
  readonly text: string;
}

/** Keywords accepted in `--upstream-cidrs` besides CIDRs and single addresses. */
export const CIDR_KEYWORDS: Readonly<Record<string, readonly string[]>> = Object.freeze({
  loopback: ['127.0.0.0/8', '::1/128'],
  // RFC 1918, shared address space (RFC 6598, used by Kubernetes and overlay networks), unique local IPv6.
  private: ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '100.64.0.0/10', 'fc00::/7'],
  any: ['0.0.0.0/0', '::/0'],
});

export const DEFAULT_UPSTREAM_CIDRS = 'loopback,private';

const LINK_LOCAL = ['169.254.0.0/16', 'fe80::/10'].map(mustCidr);
const MULTICAST = ['224.0.0.0/4', 'ff00::/8'].map(mustCidr);
const MAPPED = mustCidr('::ffff:0:0/96');
const LOOPBACK = (CIDR_KEYWORDS.loopback ?? []).map(mustCidr);

/** An IPv4/IPv6 literal → [family, integer]; null if not a literal. */
export function ipToBigInt(addr: string): { family: 4 | 6; value: bigint } | null {
  const family = isIP(addr);
  if (family === 4) {
    const value = addr.split('.').reduce((acc, o) => (acc << 8n) | BigInt(Number(o)), 0n);
    return { family: 4, value };
  }
  if (family !== 6) return null;
  let text = addr;
  // Trailing dotted quad (::ffff:1.2.3.4) → two hex groups.
  const quad = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (quad?.[1]) {
    const v4 = ipToBigInt(quad[1]);
    if (!v4) return null;
    text = text.slice(0, -quad[1].length) + `${(v4.value >> 16n).toString(16)}:${(v4.value & 0xffffn).toString(16)}`;
  }
  const [head = '', tail] = text.split('::');
  const h = head === '' ? [] : head.split(':');
  const t = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  if (groups.length !== 8) return null;
  return { family: 6, value: groups.reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g, 16)), 0n) };
}

/** `10.0.0.0/8`, `fd00::/8`, or a single address (= /32, /128). Host bits must be zero. */
export function parseCidr(text: string): Cidr | string {
  const [addr = '', bitsText, extra] = text.trim().split('/');
  if (extra !== undefined) return `'${text}' is not a CIDR (address/bits)`;
  const ip = ipToBigInt(addr);
  if (!ip) return `'${text}' is not a CIDR: '${addr}' is not an IPv4 or IPv6 address`;
  const max = ip.family === 4 ? 32 : 128;
  let bits = max;
  if (bitsText !== undefined) {
    if (!/^\d{1,3}$/.test(bitsText) || Number(bitsText) > max) return `'${text}' is not a CIDR: prefix length must be 0-${max}`;
    bits = Number(bitsText);
  }
  const hostMask = (1n << BigInt(max - bits)) - 1n;
  if ((ip.value & hostMask) !== 0n) return `'${text}' has host bits set (did you mean ${formatInt(ip.family, ip.value & ~hostMask)}/${bits}?)`;
  return { family: ip.family, net: ip.value, bits, text: `${formatInt(ip.family, ip.value)}/${bits}` };
}

function mustCidr(text: string): Cidr {
  const c = parseCidr(text);
  if (typeof c === 'string') throw new Error(c);
  return c;
}

function formatInt(family: 4 | 6, v: bigint): string {
  if (family === 4) return [24n, 16n, 8n, 0n].map((s) => String((v >> s) & 255n)).join('.');
  const groups = Array.from({ length: 8 }, (_, i) => ((v >> BigInt(112 - 16 * i)) & 0xffffn).toString(16));
  return new URL(`http://[${groups.join(':')}]/`).hostname.slice(1, -1);
}

/** Whether `cidr` contains the address (same family). */
export function cidrContains(cidr: Cidr, ip: { family: 4 | 6; value: bigint }): boolean {
  if (cidr.family !== ip.family) return false;
  const shift = BigInt((cidr.family === 4 ? 32 : 128) - cidr.bits);
  return ip.value >> shift === cidr.net >> shift;
}

/** Whether `inner` lies inside `outer`. */
function cidrWithin(inner: Cidr, outer: Cidr): boolean {
  return inner.bits >= outer.bits && cidrContains(outer, { family: inner.family, value: inner.net });
}

/** `--upstream-cidrs` as a list (keywords expanded) → CIDRs, or the reason the first bad entry is refused. */
export function parseCidrList(entries: readonly string[]): Cidr[] | string {
  if (entries.length === 0) return 'no CIDR given (the default is loopback,private)';
  const out: Cidr[] = [];
  for (const entry of entries) {
    for (const text of CIDR_KEYWORDS[entry] ?? [entry]) {
      const c = parseCidr(text);
      if (typeof c === 'string') return `${c}; use CIDRs or ${Object.keys(CIDR_KEYWORDS).join(', ')}`;
      out.push(c);
    }
  }
  return out;
}

export interface AddressPolicyOptions {
  /** Allowed ranges. Default loopback and private (DEFAULT_UPSTREAM_CIDRS). */
  allow?: readonly Cidr[];
  /** The updater's own `--listen` address; null = none. A wildcard host denies every loopback address on that port. */
  listen?: { host: string; port: number } | null;
  /** Flag named in rejections. Default `--upstream-cidrs`. */
  flag?: string;
}

/** Decides whether an upstream address may go into HAProxy. */
export class AddressPolicy {
  readonly #allow: readonly Cidr[];
  readonly #listen: { host: string; port: number } | null;
  readonly #flag: string;
  readonly #describe: string;

  constructor(opts: AddressPolicyOptions = {}) {
    const allow = opts.allow ?? parseCidrList(DEFAULT_UPSTREAM_CIDRS.split(','));
    if (typeof allow === 'string') throw new Error(allow);
    this.#allow = allow;
    this.#listen = opts.listen ?? null;
    this.#flag = opts.flag ?? '--upstream-cidrs';
    this.#describe = opts.allow ? allow.map((c) => c.text).join(',') : `default ${DEFAULT_UPSTREAM_CIDRS}`;
  }

  /** null when `addr:port` is acceptable, else the reason (for a Rejection). `addr` is a canonical literal (parseIp). */
  check(addr: string, port: number): string | null {
    let ip = ipToBigInt(addr);
    if (!ip) return `${addr} is not an address literal`;
    if (ip.family === 6 && cidrContains(MAPPED, ip)) ip = { family: 4, value: ip.value & 0xffffffffn };
    const shown = ip.family === 4 && addr.includes(':') ? `${addr} (IPv4 ${formatInt(4, ip.value)})` : addr;
    if (ip.value === 0n) return `${shown} is the unspecified address`;
    if (MULTICAST.some((c) => cidrContains(c, ip))) return `${shown} is a multicast address`;
    if (this.#isListen(ip, port)) return `${shown} port ${port} is the updater's own --listen address`;
    const linkLocal = LINK_LOCAL.find((c) => cidrContains(c, ip));
    const allowed = this.#allow.filter((c) => cidrContains(c, ip));
    if (linkLocal) {
      if (allowed.some((c) => cidrWithin(c, linkLocal))) return null;
      return `${shown} is link-local (${linkLocal.text}, e.g. a cloud metadata service): refused unless ${this.#flag} names a link-local range itself`;
    }
    if (allowed.length > 0) return null;
    return `${shown} is outside ${this.#flag} (${this.#describe}); add its range to ${this.#flag} (HAPROXY_UPDATER_UPSTREAM_CIDRS) to allow it`;
  }

  #isListen(ip: { family: 4 | 6; value: bigint }, port: number): boolean {
    const l = this.#listen;
    if (!l || l.port !== port) return false;
    const host = l.host === 'localhost' ? '127.0.0.1' : l.host;
    const own = ipToBigInt(host);
    if (!own) return false;
    // A wildcard listener answers on every local address; loopback is what an entry would use.
    if (own.value === 0n) return LOOPBACK.some((c) => cidrContains(c, ip));
    if (l.host === 'localhost' && LOOPBACK.some((c) => cidrContains(c, ip))) return true;
    return own.family === ip.family && own.value === ip.value;
  }
}
