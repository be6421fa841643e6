/**
 * Render-time guards: defence in depth. src/watch validates every registry value, but a
 * value that reaches haproxy.cfg unvalidated is a config injection (notes §8: a newline in
 * a service name injected an `http-request deny`; a `#` commented out `check`). So every
 * value is checked again here, cheaply, and the eta template passes every interpolation
 * through `assertToken` (its filter function): nothing with whitespace, a newline, `#`,
 * `;`, a backslash or a quote can be written, whatever the caller hands us.
 */
import { isIP } from 'node:net';
import path from 'node:path';
import { InvalidArgumentError } from '../errors.js';
import { assertInt, assertPort, assertIp } from '../assert.js';
import { NAME_RE } from '../model.js';

/** Characters that end, comment out, escape or quote a HAProxy config word. */
const UNSAFE_TOKEN = /[\s#;\\'"`\u0000-\u001f\u007f]/;

/** One config word: non-empty, no whitespace/control chars, `#`, `;`, `\`, quotes. */
export function assertToken(value: unknown, what = 'value'): string {
  if (typeof value !== 'string' && typeof value !== 'number') {
    throw new InvalidArgumentError(`${what}: expected a string or number, got ${typeof value}`, { what });
  }
  const s = String(value);
  if (s.length === 0 || UNSAFE_TOKEN.test(s)) {
    throw new InvalidArgumentError(`${what}: ${JSON.stringify(s)} is not a safe config word`, { what, value: s });
  }
  return s;
}

export function assertName(value: unknown, what = 'name'): string {
  if (typeof value !== 'string' || !NAME_RE.test(value)) {
    throw new InvalidArgumentError(`${what}: ${JSON.stringify(value)} does not match ${NAME_RE}`, { what, value });
  }
  return value;
}

/** HAProxy proxy/backend names we generate: a prefix plus a validated service name. */
const PROXY_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,80}$/;
export function assertProxyName(value: unknown, what = 'proxy name'): string {
  if (typeof value !== 'string' || !PROXY_NAME_RE.test(value)) {
    throw new InvalidArgumentError(`${what}: ${JSON.stringify(value)} is not a valid proxy name`, { what, value });
  }
  return value;
}

// Lower-case DNS name, no trailing dot. `_` is tolerated inside labels (service records,
// some internal zones): harmless for the config, and render must not be stricter than watch.
const LABEL = '[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?';
const DOMAIN_RE = new RegExp(`^(?=.{1,253}$)${LABEL}(?:\\.${LABEL})*$`);
export function assertDomain(value: unknown, what = 'domain'): string {
  if (typeof value !== 'string' || !DOMAIN_RE.test(value)) {
    throw new InvalidArgumentError(`${what}: ${JSON.stringify(value)} is not a lower-case DNS name`, { what, value });
  }
  return value;
}

// Integers, ports and IP literals: the one rule of src/assert.ts (shared with src/runtime).
export { assertInt, assertPort, assertIp };

// Absolute, normalised, and made of characters that need no quoting in haproxy.cfg. We only
// ever write paths we derived ourselves from --state-dir/--certs; anything else is refused.
const PATH_RE = /^\/[A-Za-z0-9._\/+=@,-]*$/;
export function assertAbsPath(value: unknown, what = 'path'): string {
  if (typeof value !== 'string' || !PATH_RE.test(value) || path.posix.normalize(value) !== value || value.length > 4000) {
    throw new InvalidArgumentError(
      `${what}: ${JSON.stringify(value)} must be a normalised absolute path of [A-Za-z0-9._/+=@,-]`,
      { what, value },
    );
  }
  return value;
}

/**
 * `bind` address: `*` (all IPv4), an IPv4 literal, or an IPv6 literal (brackets optional);
 * `::` binds dual-stack (`v4v6`) whatever the host's `bindv6only` sysctl says. `addr` is
 * without brackets (formatAddrPort adds them).
 */
export function bindHost(address: string): { addr: string; dualStack: boolean } {
  if (address === '*') return { addr: '*', dualStack: false };
  const bare = address.replace(/^\[(.*)\]$/, '$1');
  const family = isIP(bare);
  if (family === 4) return { addr: bare, dualStack: false };
  if (family === 6) return { addr: bare, dualStack: bare === '::' };
  throw new InvalidArgumentError(`bindAddress: ${JSON.stringify(address)} must be '*', an IPv4 or an IPv6 literal`, { value: address });
}

/** Stats credentials: strict charsets, since they are written into the `userlist stats-users` line. */
export const STATS_USER_RE = /^[A-Za-z0-9._-]{1,64}$/;
export const STATS_PASSWORD_RE = /^[A-Za-z0-9._~!@%^*+=,/-]{8,128}$/;

/** `log` target: `stdout`/`stderr`, an absolute unix socket path, or `IPv4:port` (UDP). */
export function logTarget(target: string): { target: string; raw: boolean } {
  if (target === 'stdout' || target === 'stderr') return { target, raw: true };
  if (target.startsWith('/')) return { target: assertAbsPath(target, 'logTarget'), raw: false };
  const m = /^(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})$/.exec(target);
  if (m && isIP(m[1] ?? '') === 4) {
    assertPort(Number(m[2]), 'logTarget port');
    return { target, raw: false };
  }
  throw new InvalidArgumentError(`logTarget: ${JSON.stringify(target)} must be stdout, stderr, an absolute socket path or IPv4:port`, {
    value: target,
  });
}
