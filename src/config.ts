/**
 * Command-line flags and their environment variables: one table drives parsing, `--help`
 * and the README's config reference, so they cannot drift apart. Every flag `--foo-bar`
 * is also `HAPROXY_UPDATER_FOO_BAR`; a flag given on the command line wins over the env.
 * A bad value is a ConfigError naming the flag (and the env var when it came from there).
 */
import { isIP } from 'node:net';
import path from 'node:path';
import { ConfigError } from './errors.js';

export type Command = 'run' | 'register' | 'deregister' | 'render' | 'plan' | 'status' | 'release-hold';
export const COMMANDS: readonly Command[] = ['run', 'register', 'deregister', 'render', 'plan', 'status', 'release-hold'];

type Kind = 'string' | 'int' | 'port' | 'optport' | 'bool' | 'ms' | 'list' | 'hostport' | 'path';

export interface FlagSpec {
  readonly name: string;
  readonly kind: Kind;
  readonly default?: string;
  readonly choices?: readonly string[];
  readonly help: string;
  /** Commands that accept the flag. */
  readonly commands: readonly Command[];
}

const ETCD_CMDS: Command[] = ['run', 'register', 'deregister', 'render', 'plan', 'status'];
const HAPROXY_CMDS: Command[] = ['run', 'render', 'plan', 'status'];
const RENDER_CMDS: Command[] = ['run', 'render', 'plan'];

export const FLAGS: readonly FlagSpec[] = [
  { name: 'etcd', kind: 'list', default: 'http://127.0.0.1:2379', help: 'etcd endpoints, comma separated', commands: ETCD_CMDS },
  { name: 'prefix', kind: 'string', default: '/haproxy-discover', help: 'registry key prefix in etcd', commands: ETCD_CMDS },
  { name: 'etcd-ca', kind: 'path', help: 'CA certificate file for etcd TLS', commands: ETCD_CMDS },
  { name: 'etcd-cert', kind: 'path', help: 'client certificate file for etcd TLS', commands: ETCD_CMDS },
  { name: 'etcd-key', kind: 'path', help: 'client key file for etcd TLS', commands: ETCD_CMDS },
  { name: 'etcd-username', kind: 'string', help: 'etcd user (with --etcd-password or --etcd-password-file)', commands: ETCD_CMDS },
  { name: 'etcd-password', kind: 'string', help: 'etcd password (prefer the env var or --etcd-password-file)', commands: ETCD_CMDS },
  { name: 'etcd-password-file', kind: 'path', help: 'file holding the etcd password', commands: ETCD_CMDS },
  { name: 'state-dir', kind: 'path', default: '/var/lib/haproxy-updater', help: 'haproxy.cfg, map files, server state; in managed mode also master.sock and admin.sock', commands: HAPROXY_CMDS },
  { name: 'haproxy', kind: 'string', default: 'managed', choices: ['managed', 'external'], help: 'managed: start `haproxy -W` and stop it on exit; external: use --master-socket/--runtime-socket of a running one', commands: ['run', 'plan', 'status'] },
  { name: 'haproxy-bin', kind: 'string', default: 'haproxy', help: 'HAProxy executable (managed mode and `haproxy -c`)', commands: HAPROXY_CMDS },
  { name: 'master-socket', kind: 'path', help: 'master CLI socket (default <state-dir>/master.sock)', commands: ['run', 'plan', 'status'] },
  { name: 'runtime-socket', kind: 'path', help: 'admin Runtime API socket (default <state-dir>/admin.sock)', commands: HAPROXY_CMDS },
  { name: 'bind-address', kind: 'string', default: '*', help: 'address the HTTP/HTTPS/TCP frontends listen on (`*` = all)', commands: RENDER_CMDS },
  { name: 'http-port', kind: 'port', default: '80', help: 'HTTP frontend port', commands: RENDER_CMDS },
  { name: 'https-port', kind: 'optport', default: '443', help: 'HTTPS frontend port (TLS termination with --certs, SNI passthrough for sslpass services); 0 = off', commands: RENDER_CMDS },
  { name: 'stats-port', kind: 'optport', default: '0', help: 'stats page (/admin?stats) and Prometheus exporter (/metrics) port; 0 = off', commands: RENDER_CMDS },
  { name: 'stats-user', kind: 'string', default: 'admin', help: 'stats page user', commands: RENDER_CMDS },
  { name: 'stats-password', kind: 'string', help: 'stats page password (no default: without one the stats page is not served)', commands: RENDER_CMDS },
  { name: 'stats-password-file', kind: 'path', help: 'file holding the stats page password', commands: RENDER_CMDS },
  { name: 'access-log', kind: 'string', help: 'HAProxy access log, one JSON line per request: stdout, stderr, a unix socket path (/dev/log) or IPv4:port (UDP syslog); managed mode passes stdout lines on as they are; empty = off', commands: RENDER_CMDS },
  { name: 'certs', kind: 'path', help: 'directory of PEM files (cert+key) for TLS termination', commands: RENDER_CMDS },
  { name: 'reload-guard', kind: 'string', default: 'none', choices: ['none', 'iptables'], help: 'none: rely on master-worker listener passing; iptables: drop SYNs to the frontend ports during the reload (needs NET_ADMIN)', commands: ['run'] },
  { name: 'listen', kind: 'hostport', default: '127.0.0.1:9180', help: 'host:port for /healthz, /readyz, /metrics and POST /release-hold; empty = off (release-hold: where the daemon listens)', commands: ['run', 'release-hold'] },
  { name: 'upstream-cidrs', kind: 'list', default: 'loopback,private', help: 'addresses upstreams may have: CIDRs, single addresses and the words loopback (127.0.0.0/8, ::1), private (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7), any; others are rejected. Never allowed: unspecified, multicast, the --listen address; link-local (169.254/16, fe80::/10) only if a listed range lies inside it', commands: RENDER_CMDS },
  { name: 'max-removal', kind: 'string', default: '50%', help: 'hold (do not apply) a registry update that removes more than this share of the serving upstreams, or every upstream of a serving service; released when the registry comes back or by `release-hold`; 100% = never hold', commands: ['run'] },
  { name: 'ready-grace', kind: 'ms', default: '10s', help: '/readyz stays 503 until every service with registered upstreams has a serving server, at most this long per service; after it, 200 listing the services still without one', commands: ['run'] },
  { name: 'drain-timeout', kind: 'ms', default: '10s', help: 'longest wait for a removed upstream\'s sessions to finish before maint', commands: ['run', 'plan'] },
  { name: 'admission', kind: 'string', default: 'probe', choices: ['probe', 'check', 'immediate'], help: 'how a new upstream is let in: probe = held DOWN, the updater probes it (TCP connect, GET healthPath, TLS handshake) and lets it in at once on success, else HAProxy\'s check decides; check = held DOWN until HAProxy\'s check passes; immediate = at once', commands: ['run', 'plan'] },
  { name: 'admission-timeout', kind: 'ms', default: '500ms', help: 'deadline of one admission probe', commands: ['run'] },
  { name: 'hard-stop-after', kind: 'ms', default: '5m', help: 'HAProxy `hard-stop-after`: an old worker still finishing connections after a reload is stopped this long after it, so they cannot pile up; must exceed --drain-timeout; 0 = never', commands: RENDER_CMDS },
  { name: 'mworker-max-reloads', kind: 'int', default: '50', help: 'HAProxy `mworker-max-reloads`: an old worker that survived this many reloads is stopped; 0 = unbounded', commands: RENDER_CMDS },
  { name: 'hold-until-healthy', kind: 'bool', help: 'older alias: true = --admission check, false = --admission immediate', commands: ['run', 'plan'] },
  { name: 'verify-interval', kind: 'ms', default: '5s', help: 'how often HAProxy is re-read and drift repaired', commands: ['run'] },
  { name: 'reload-min-interval', kind: 'ms', default: '1s', help: 'minimum time between two reloads (a burst of structural changes = one reload)', commands: ['run'] },
  { name: 'consolidate-after', kind: 'ms', default: '60s', help: 'reload to grow slots / drop removed backends once overflow or removals have waited this long; 0 = only with the next structural reload', commands: ['run'] },
  { name: 'coalesce', kind: 'ms', default: '5ms', help: 'etcd change batching window', commands: ['run'] },
  { name: 'log-format', kind: 'string', choices: ['json', 'pretty'], help: 'log lines: json (one object per line) or pretty (one human line); default pretty on a terminal, else json', commands: COMMANDS as Command[] },
  { name: 'log-level', kind: 'string', default: 'info', choices: ['fatal', 'error', 'warn', 'info', 'debug', 'trace'], help: 'log level', commands: COMMANDS as Command[] },
  // register / deregister
  { name: 'kind', kind: 'string', default: 'http', choices: ['http', 'tcp'], help: 'service kind', commands: ['register', 'deregister'] },
  { name: 'service', kind: 'string', help: 'service name (register: default = first label of --domain)', commands: ['register', 'deregister'] },
  { name: 'id', kind: 'string', help: 'upstream id (default <hostname>-<port>)', commands: ['register', 'deregister'] },
  { name: 'addr', kind: 'string', help: 'upstream address IP:PORT', commands: ['register'] },
  { name: 'domain', kind: 'string', help: 'domain(s) of the http service, comma separated', commands: ['register'] },
  { name: 'weight', kind: 'int', help: 'upstream weight 0-256', commands: ['register'] },
  { name: 'ttl', kind: 'ms', default: '10s', help: 'lease TTL: the upstream disappears this long after the registrar dies', commands: ['register'] },
  // render
  { name: 'out', kind: 'path', help: 'write the config (and map files beside it) instead of printing', commands: ['render'] },
];

export function envName(flag: string): string {
  return `HAPROXY_UPDATER_${flag.toUpperCase().replaceAll('-', '_')}`;
}

export type RawValues = Record<string, string | undefined>;

/** Parses a duration: `250ms`, `5s`, `2m`, or a bare number of milliseconds. */
export function parseDuration(text: string): number | null {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!m) return null;
  const n = Number(m[1]);
  const unit = m[2] ?? 'ms';
  const factor = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[unit] ?? 1;
  return Math.round(n * factor);
}

export interface Parsed {
  command: Command | 'help' | 'version';
  values: Map<string, string>;
  /** Flags that were set explicitly (command line or env). */
  explicit: Set<string>;
}

/**
 * argv (without node and script) → command + raw values. Supports `--flag value`,
 * `--flag=value`, `--no-flag` for booleans, `-h/--help`.
 */
export function parseArgv(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): Parsed {
  const [first, ...rest] = argv;
  if (first === undefined || first === '-h' || first === '--help' || first === 'help') {
    return { command: 'help', values: new Map(rest[0] ? [['topic', rest[0]]] : []), explicit: new Set() };
  }
  if (first === '--version' || first === '-v') return { command: 'version', values: new Map(), explicit: new Set() };
  if (!(COMMANDS as readonly string[]).includes(first)) {
    throw new ConfigError(`unknown command '${first}' (commands: ${COMMANDS.join(', ')})`, { command: first });
  }
  const command = first as Command;
  const specs = new Map(FLAGS.filter((f) => f.commands.includes(command)).map((f) => [f.name, f]));
  const values = new Map<string, string>();
  const explicit = new Set<string>();
  for (const f of specs.values()) {
    const fromEnv = env[envName(f.name)];
    if (fromEnv !== undefined && fromEnv !== '') {
      values.set(f.name, fromEnv);
      explicit.add(f.name);
    }
  }
  for (let i = 0; i < rest.length; i++) {
    const arg = rest[i] ?? '';
    if (arg === '-h' || arg === '--help') return { command: 'help', values: new Map([['topic', command]]), explicit };
    if (!arg.startsWith('--')) throw new ConfigError(`unexpected argument '${arg}' for '${command}'`, { arg });
    let name = arg.slice(2);
    let value: string | undefined;
    const eq = name.indexOf('=');
    if (eq >= 0) {
      value = name.slice(eq + 1);
      name = name.slice(0, eq);
    }
    let spec = specs.get(name);
    if (!spec && name.startsWith('no-') && specs.get(name.slice(3))?.kind === 'bool' && value === undefined) {
      spec = specs.get(name.slice(3));
      name = name.slice(3);
      value = 'false';
    }
    if (!spec) {
      const known = FLAGS.find((f) => f.name === name);
      throw new ConfigError(
        known ? `--${name} does not apply to '${command}' (it is for: ${known.commands.join(', ')})` : `unknown flag --${name} for '${command}' (see '${command} --help')`,
        { flag: name },
      );
    }
    if (value === undefined) {
      if (spec.kind === 'bool' && (rest[i + 1] === undefined || rest[i + 1]?.startsWith('--'))) value = 'true';
      else {
        value = rest[++i];
        if (value === undefined) throw new ConfigError(`--${name} needs a value`, { flag: name });
      }
    }
    values.set(name, value);
    explicit.add(name);
  }
  for (const f of specs.values()) {
    if (!values.has(f.name) && f.default !== undefined) values.set(f.name, f.default);
  }
  return { command, values, explicit };
}

/** Typed accessors with validation; errors name the flag and its env var. */
export class Flags {
  readonly #values: Map<string, string>;
  readonly #explicit: Set<string>;
  constructor(parsed: Pick<Parsed, 'values' | 'explicit'>) {
    this.#values = parsed.values;
    this.#explicit = parsed.explicit;
  }
  #fail(name: string, reason: string): never {
    throw new ConfigError(`--${name} (${envName(name)}): ${reason}`, { flag: name, value: this.#values.get(name) });
  }
  #spec(name: string): FlagSpec {
    const s = FLAGS.find((f) => f.name === name);
    if (!s) throw new Error(`no flag ${name}`);
    return s;
  }
  isSet(name: string): boolean {
    return this.#explicit.has(name);
  }
  str(name: string): string | undefined {
    const v = this.#values.get(name);
    const spec = this.#spec(name);
    if (v !== undefined && spec.choices && !spec.choices.includes(v)) this.#fail(name, `'${v}' is not one of ${spec.choices.join(', ')}`);
    if (v !== undefined && /[\u0000-\u001f\u007f]/.test(v)) this.#fail(name, 'contains control characters');
    return v;
  }
  req(name: string): string {
    const v = this.str(name);
    if (v === undefined || v === '') this.#fail(name, 'is required');
    return v;
  }
  int(name: string, min: number, max: number): number | undefined {
    const v = this.str(name);
    if (v === undefined) return undefined;
    if (!/^\d+$/.test(v)) this.#fail(name, `'${v}' is not a whole number`);
    const n = Number(v);
    if (n < min || n > max) this.#fail(name, `${n} is outside ${min}-${max}`);
    return n;
  }
  port(name: string): number {
    const n = this.int(name, 1, 65535);
    if (n === undefined) this.#fail(name, 'is required');
    return n;
  }
  /** A port, or null when 0/empty. */
  optPort(name: string): number | null {
    const v = this.str(name);
    if (v === undefined || v === '' || v === '0') return null;
    return this.int(name, 1, 65535) ?? null;
  }
  bool(name: string): boolean {
    const v = (this.str(name) ?? 'false').toLowerCase();
    if (['true', '1', 'yes', 'on'].includes(v)) return true;
    if (['false', '0', 'no', 'off'].includes(v)) return false;
    this.#fail(name, `'${v}' is not a boolean (true/false)`);
  }
  ms(name: string): number {
    const v = this.str(name) ?? '';
    const n = parseDuration(v);
    if (n === null) this.#fail(name, `'${v}' is not a duration (e.g. 250ms, 5s, 2m)`);
    return n;
  }
  list(name: string): string[] {
    return (this.str(name) ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  }
  path(name: string): string | undefined {
    const v = this.str(name);
    if (v === undefined || v === '') return undefined;
    if (/[\s;#\\'"]/.test(v)) this.#fail(name, 'paths with whitespace, ;, #, \\ or quotes are not supported (they end up in haproxy.cfg)');
    return path.resolve(v);
  }
  /** Checks every flag `command` accepts by its kind, so a bad value stops the command before any network call. */
  checkAll(command: Command): void {
    for (const spec of FLAGS) {
      if (!spec.commands.includes(command) || !this.#values.has(spec.name)) continue;
      const check: Record<Kind, () => unknown> = {
        string: () => this.str(spec.name),
        int: () => this.int(spec.name, 0, Number.MAX_SAFE_INTEGER),
        port: () => this.port(spec.name),
        optport: () => this.optPort(spec.name),
        bool: () => this.bool(spec.name),
        ms: () => this.ms(spec.name),
        list: () => this.list(spec.name),
        hostport: () => this.hostPort(spec.name),
        path: () => this.path(spec.name),
      };
      check[spec.kind]();
    }
  }
  /** host:port, `[v6]:port`, or empty (off). */
  hostPort(name: string): { host: string; port: number } | null {
    const v = this.str(name);
    if (!v) return null;
    const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s]+)):(\d{1,5})$/.exec(v);
    const host = m?.[1] ?? m?.[2];
    const port = Number(m?.[3]);
    if (!m || !host || port < 0 || port > 65535) this.#fail(name, `'${v}' is not host:port`);
    if (host !== 'localhost' && !isIP(host)) this.#fail(name, `'${host}' is not an IP address`);
    return { host, port };
  }
}

export function helpText(command?: string): string {
  const lines: string[] = [];
  if (!command || !(COMMANDS as readonly string[]).includes(command)) {
    lines.push(
      'haproxy-updater: keeps a running HAProxy in sync with an etcd service registry.',
      '',
      'Usage: haproxy-updater <command> [flags]',
      '',
      'Commands:',
      '  run         the daemon: watch etcd, apply changes over the Runtime API, reload only for structural changes',
      '  register    register one upstream with a lease kept alive until SIGINT/SIGTERM',
      '  deregister  remove one upstream',
      '  render      print the haproxy.cfg the current registry renders to',
      '  plan        print what `run` would do now',
      '  status      table of backends, slots, upstreams and health',
      '  release-hold  apply a registry update the daemon holds (--max-removal), through its --listen endpoint',
      '',
      "Run 'haproxy-updater <command> --help' for its flags. Every flag is also an env var:",
      '--foo-bar = HAPROXY_UPDATER_FOO_BAR.',
    );
    return lines.join('\n');
  }
  lines.push(`Usage: haproxy-updater ${command} [flags]`, '', 'Flags (env var; default):');
  for (const f of FLAGS.filter((x) => x.commands.includes(command as Command))) {
    const choices = f.choices ? ` (${f.choices.join('|')})` : '';
    const def = f.default !== undefined ? `; default ${f.default === '' ? '""' : f.default}` : '';
    lines.push(`  --${f.name}${f.kind === 'bool' ? '' : ' <value>'}${choices}`, `      ${f.help}`, `      [${envName(f.name)}${def}]`);
  }
  return lines.join('\n');
}
