/**
 * `haproxy-updater <command>`: run, register, deregister, render, plan, status, release-hold.
 * Flags and env vars come from the table in config.ts.
 */
import os from 'node:os';
import http from 'node:http';
import path from 'node:path';
import { readFileSync, readdirSync } from 'node:fs';
import { parseArgv, Flags, helpText, envName, type Command } from './config.js';
import { ConfigError, StateDirLockedError, UpdaterError } from './errors.js';
import { rootLogger, logger, setLogFormat } from './log.js';
import {
  Daemon,
  serveEndpoints,
  renderOnce,
  writeRenderedFiles,
  redactConfig,
  planOnce,
  statusOnce,
  defaultSettings,
  lockStateDir,
  admissionMode,
  holdsNewServers,
  STATS_PASSWORD_RE,
  STATS_USER_RE,
  logTarget,
  type DaemonOptions,
  type RenderSettings,
  type StatusRow,
  describeUnserved,
  parseMaxRemoval,
} from './daemon/index.js';
import { keepRegistered, deregisterUpstream, parseUpstreamValue, parseCidrList, AddressPolicy } from './watch/index.js';

const log = logger('cli');

function etcdOptions(f: Flags) {
  const tls = f.path('etcd-ca') || f.path('etcd-cert') || f.path('etcd-key') ? { ca: f.path('etcd-ca'), cert: f.path('etcd-cert'), key: f.path('etcd-key') } : undefined;
  const username = f.str('etcd-username');
  let password = f.str('etcd-password');
  const pwFile = f.path('etcd-password-file');
  if (pwFile) password = readFileSync(pwFile, 'utf8').trim();
  if (username && !password) throw new ConfigError('--etcd-username needs --etcd-password or --etcd-password-file', { flag: 'etcd-username' });
  const endpoints = f.list('etcd');
  for (const e of endpoints) {
    if (!/^https?:\/\/[^\s/]+$/.test(e)) throw new ConfigError(`--etcd (HAPROXY_UPDATER_ETCD): '${e}' is not an http(s)://host:port URL`, { flag: 'etcd' });
  }
  if (endpoints.length === 0) throw new ConfigError('--etcd (HAPROXY_UPDATER_ETCD): no endpoint given', { flag: 'etcd' });
  const prefix = f.req('prefix').replace(/\/+$/, '');
  if (!/^\/[A-Za-z0-9._\/-]*$/.test(prefix)) throw new ConfigError(`--prefix (HAPROXY_UPDATER_PREFIX): '${prefix}' must be an absolute key path of [A-Za-z0-9._/-]`, { flag: 'prefix' });
  return { endpoints, prefix, tls, auth: username && password ? { username, password } : undefined };
}

/** `--upstream-cidrs`, with `listen` (run's --listen address) never allowed as an upstream. */
function addressPolicy(f: Flags, listen: { host: string; port: number } | null = null): AddressPolicy {
  const allow = parseCidrList(f.list('upstream-cidrs'));
  if (typeof allow === 'string') throw new ConfigError(`--upstream-cidrs (HAPROXY_UPDATER_UPSTREAM_CIDRS): ${allow}`, { flag: 'upstream-cidrs' });
  return new AddressPolicy({ allow: f.isSet('upstream-cidrs') ? allow : undefined, listen });
}

function renderSettings(f: Flags): RenderSettings {
  const stateDir = f.path('state-dir')!;
  const base = defaultSettings(stateDir);
  let statsPassword = f.str('stats-password') ?? null;
  const pwFile = f.path('stats-password-file');
  if (pwFile) statsPassword = readFileSync(pwFile, 'utf8').trim();
  const certs = f.path('certs') ?? null;
  let hasCerts = false;
  if (certs) {
    try {
      readdirSync(certs);
      hasCerts = true; // an empty directory is fine: the updater's default certificate keeps the crt-list non-empty
    } catch (err) {
      throw new ConfigError(`--certs (HAPROXY_UPDATER_CERTS): cannot read ${certs}`, { flag: 'certs' }, { cause: err });
    }
  }
  const statsUser = f.str('stats-user') ?? 'admin';
  // Checked here, naming the flag, rather than deep in the renderer: both go into haproxy.cfg.
  if (!STATS_USER_RE.test(statsUser)) throw new ConfigError('--stats-user: must be 1-64 characters of A-Z a-z 0-9 . _ - (HAPROXY_UPDATER_STATS_USER)', { flag: 'stats-user' });
  if (statsPassword !== null && !STATS_PASSWORD_RE.test(statsPassword)) {
    const from = pwFile ? `--stats-password-file ${pwFile}` : '--stats-password';
    throw new ConfigError(`${from}: must be 8-128 characters of A-Z a-z 0-9 and ._~!@%^*+=,/- (HAPROXY_UPDATER_STATS_PASSWORD)`, { flag: pwFile ? 'stats-password-file' : 'stats-password' });
  }
  const accessLog = f.str('access-log') || null;
  if (accessLog) {
    try {
      logTarget(accessLog);
    } catch (err) {
      throw new ConfigError(`--access-log (HAPROXY_UPDATER_ACCESS_LOG): '${accessLog}' must be stdout, stderr, an absolute unix socket path or IPv4:port`, { flag: 'access-log' }, { cause: err });
    }
  }
  const bind = f.str('bind-address') ?? '*';
  const runtimeSocket = f.path('runtime-socket');
  return {
    ...base,
    bindAddress: bind,
    httpPort: f.port('http-port'),
    httpsPort: f.optPort('https-port'),
    statsPort: f.optPort('stats-port'),
    statsUser,
    statsPassword,
    certsDir: certs,
    hasCerts,
    adminSocket: runtimeSocket ?? base.adminSocket,
    logTarget: accessLog,
    hardStopAfterMs: f.ms('hard-stop-after') || null,
    mworkerMaxReloads: f.int('mworker-max-reloads', 0, 1_000_000) || null,
  };
}

function admissionTimeout(f: Flags): number {
  const ms = f.ms('admission-timeout');
  if (ms < 1 || ms > 60_000) throw new ConfigError(`--admission-timeout (HAPROXY_UPDATER_ADMISSION_TIMEOUT): ${ms} ms is outside 1 ms-60 s`, { flag: 'admission-timeout' });
  return ms;
}

async function cmdRun(f: Flags): Promise<number> {
  const stateDir = f.path('state-dir')!;
  const mode = f.str('haproxy') as 'managed' | 'external';
  const settings = renderSettings(f);
  if (mode === 'external' && !f.isSet('master-socket')) {
    throw new ConfigError('--haproxy external needs --master-socket (and --runtime-socket) of the running HAProxy', { flag: 'master-socket' });
  }
  // An old worker stopped before its drain ends would cut the connections the drain protects.
  if (settings.hardStopAfterMs != null && (settings.hardStopAfterMs <= f.ms('drain-timeout') || settings.hardStopAfterMs < 1000)) {
    throw new ConfigError(`--hard-stop-after (HAPROXY_UPDATER_HARD_STOP_AFTER) must be at least 1s and exceed --drain-timeout (${f.ms('drain-timeout')} ms), or be 0 (never)`, { flag: 'hard-stop-after' });
  }
  if (settings.statsPort && !settings.statsPassword) {
    log.warn({ statsPort: settings.statsPort }, 'no stats password given (HAPROXY_UPDATER_STATS_PASSWORD or --stats-password-file): the stats page is not served');
  }
  const opts: DaemonOptions = {
    etcd: etcdOptions(f),
    stateDir,
    mode,
    haproxyBin: f.str('haproxy-bin') ?? 'haproxy',
    masterSocket: f.path('master-socket') ?? path.join(stateDir, 'master.sock'),
    runtimeSocket: settings.adminSocket,
    render: settings,
    guard: f.str('reload-guard') as 'none' | 'iptables',
    drainTimeoutMs: f.ms('drain-timeout'),
    admission: admissionMode(f),
    admissionTimeoutMs: admissionTimeout(f),
    verifyIntervalMs: Math.max(100, f.ms('verify-interval')),
    reloadMinIntervalMs: f.ms('reload-min-interval'),
    consolidateAfterMs: f.ms('consolidate-after'),
    coalesceMs: f.ms('coalesce'),
    maxRemoval: maxRemoval(f),
    readyGraceMs: f.ms('ready-grace'),
    addressPolicy: addressPolicy(f, f.hostPort('listen')),
  };
  const listen = f.hostPort('listen');
  // Every flag is checked above; the lock comes before anything touches the state dir or the network.
  const lock = lockStateDir(stateDir);
  process.once('exit', () => lock.release());
  try {
    return await runDaemon(opts, listen, lock.release);
  } finally {
    lock.release();
  }
}

async function runDaemon(opts: DaemonOptions, listen: ReturnType<Flags['hostPort']>, release: () => void): Promise<number> {
  const { mode, stateDir } = opts;
  const daemon = new Daemon(opts);
  const server = listen ? await serveEndpoints(daemon, listen) : null;
  let stopping: Promise<void> | null = null;
  const stop = (signal: string) => {
    if (stopping) return;
    log.info({ signal }, 'stopping: finishing the current step');
    stopping = (async () => {
      await daemon.stop();
      server?.close();
      release();
    })();
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  await daemon.start();
  log.info({ mode, stateDir }, 'haproxy-updater running');
  await new Promise<void>((resolve) => {
    const check = setInterval(() => {
      if (stopping) {
        clearInterval(check);
        void stopping.then(resolve);
      }
    }, 100);
  });
  return 0;
}

function maxRemoval(f: Flags): number {
  const text = f.req('max-removal');
  const v = parseMaxRemoval(text);
  if (v === null) throw new ConfigError(`--max-removal (HAPROXY_UPDATER_MAX_REMOVAL): '${text}' is not a percentage 0-100% (e.g. 50%)`, { flag: 'max-removal' });
  return v;
}

/** POST /release-hold to the daemon's --listen endpoint; prints what it released. */
async function cmdReleaseHold(f: Flags): Promise<number> {
  const listen = f.hostPort('listen');
  if (!listen) throw new ConfigError('--listen (HAPROXY_UPDATER_LISTEN): release-hold needs the host:port the daemon serves /readyz on', { flag: 'listen' });
  // A wildcard --listen (the compose sidecar's 0.0.0.0:9180) is reached on loopback.
  const host = listen.host === '0.0.0.0' ? '127.0.0.1' : listen.host === '::' ? '::1' : listen.host;
  const where = `${host.includes(':') ? `[${host}]` : host}:${listen.port}`;
  const reply = await new Promise<{ status: number; body: string } | { error: string }>((resolve) => {
    // The daemon answers after the pass that applies the released update: allow for a reload.
    const req = http.request({ host, port: listen.port, method: 'POST', path: '/release-hold', timeout: 60_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: body.trim() }));
      res.on('error', (err) => resolve({ error: err.message }));
    });
    req.on('timeout', () => req.destroy(new Error('no answer within 60s')));
    req.on('error', (err: NodeJS.ErrnoException) => resolve({ error: err.code ?? err.message }));
    req.end();
  });
  if ('error' in reply) {
    process.stderr.write(`haproxy-updater release-hold: no daemon answers on ${where} (${reply.error}) (--listen, HAPROXY_UPDATER_LISTEN): is \`haproxy-updater run\` running with this --listen?\n`);
    return 1;
  }
  if (reply.status === 409) {
    process.stdout.write(`nothing is held by the daemon on ${where}\n`);
    return 0;
  }
  if (reply.status !== 200) {
    process.stderr.write(`haproxy-updater release-hold: ${where} answered ${reply.status}: ${reply.body}\n`);
    return 1;
  }
  process.stdout.write(`${reply.body}\n`);
  return 0;
}

async function cmdRegister(f: Flags): Promise<number> {
  const etcd = etcdOptions(f);
  const kind = f.str('kind') as 'http' | 'tcp';
  const addrText = f.req('addr');
  const up = parseUpstreamValue(addrText);
  if (!up.ok) throw new ConfigError(`--addr (HAPROXY_UPDATER_ADDR): ${up.reason}`, { flag: 'addr' });
  const domains = f.list('domain');
  const service = f.str('service') ?? domains[0]?.split('.')[0];
  if (!service) throw new ConfigError('--service (or --domain to derive it from) is required', { flag: 'service' });
  const id = f.str('id') ?? `${os.hostname().replace(/[^A-Za-z0-9._-]/g, '-')}-${up.value.port}`;
  const ttlMs = f.ms('ttl');
  const opts = {
    endpoints: etcd.endpoints,
    prefix: etcd.prefix,
    tls: etcd.tls,
    auth: etcd.auth,
    kind,
    service,
    id,
    addr: up.value.addr,
    port: up.value.port,
    weight: f.int('weight', 0, 256),
    domains: domains.length ? domains : undefined,
    ttlSec: Math.max(1, Math.round(ttlMs / 1000)),
  };
  const stop = new Promise<void>((resolve) => {
    process.once('SIGTERM', () => resolve());
    process.once('SIGINT', () => resolve());
  });
  await keepRegistered(opts, stop);
  return 0;
}

async function cmdDeregister(f: Flags): Promise<number> {
  const etcd = etcdOptions(f);
  await deregisterUpstream({ ...etcd, kind: f.str('kind') as 'http' | 'tcp', service: f.req('service'), id: f.req('id') });
  return 0;
}

async function cmdRender(f: Flags): Promise<number> {
  const settings = renderSettings(f);
  const { rendered, rejections } = await renderOnce({ ...etcdOptions(f), addressPolicy: addressPolicy(f) }, settings);
  for (const r of rejections) log.warn({ key: r.key, reason: r.reason }, 'registry entry rejected');
  const out = f.path('out');
  if (!out) {
    process.stdout.write(redactConfig(rendered.config, settings));
    return 0;
  }
  await writeRenderedFiles(out, rendered);
  log.info({ out, files: [...rendered.files.keys()] }, 'rendered');
  return 0;
}

async function cmdPlan(f: Flags): Promise<number> {
  // renderSettings: the same flag checks as `run` (and its runtime socket).
  const settings = renderSettings(f);
  const { lines, rejections } = await planOnce({
    etcd: { ...etcdOptions(f), addressPolicy: addressPolicy(f) },
    stateDir: f.path('state-dir')!,
    runtimeSocket: settings.adminSocket,
    settings,
    drainTimeoutMs: f.ms('drain-timeout'),
    holdUntilHealthy: holdsNewServers(admissionMode(f)),
  });
  for (const r of rejections) process.stdout.write(`rejected  ${r.key}: ${r.reason}\n`);
  process.stdout.write(lines.join('\n') + '\n');
  return 0;
}

const STATUS_COLUMNS: ReadonlyArray<[string, (r: StatusRow) => string]> = [
  ['BACKEND', (r) => r.backend],
  ['SLOT', (r) => r.slot],
  ['UPSTREAM', (r) => r.upstream],
  ['ADDRESS', (r) => r.address],
  ['ADMIN', (r) => r.admin],
  ['STATUS', (r) => r.status],
  ['CHECK', (r) => r.check],
  ['SESSIONS', (r) => String(r.sessions)],
];

async function cmdStatus(f: Flags): Promise<number> {
  const { proc, rows, registryError, unserved, quarantined } = await statusOnce({
    etcd: etcdOptions(f),
    stateDir: f.path('state-dir')!,
    runtimeSocket: f.path('runtime-socket'),
    masterSocket: f.path('master-socket'),
  });
  if (registryError) log.warn({ err: registryError }, 'etcd unreachable: showing HAProxy only');
  const table = [STATUS_COLUMNS.map(([h]) => h), ...rows.map((r) => STATUS_COLUMNS.map(([, cell]) => cell(r)))];
  const widths = table[0]!.map((_, i) => Math.max(...table.map((r) => (r[i] ?? '').length)));
  const lines = table.map((r) => r.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd());
  if (proc) lines.unshift(`haproxy master ${proc.masterPid}: ${proc.reloads} reloads (failed: ${proc.failed}), workers ${proc.workers.map((w) => w.pid).join(',')}, old workers ${proc.oldWorkers.length}`);
  // The same list /readyz gives (src/daemon/readiness.ts).
  if (unserved) lines.push(unserved.length ? `unserved: ${unserved.length} service(s) with registered upstreams and none serving` : 'serving: every service with registered upstreams has a serving server', ...unserved.map((u) => `  ${describeUnserved(u)}`));
  // What the running daemon left out of haproxy.cfg (it keeps quarantine.json in the state dir).
  for (const q of quarantined) lines.push(`quarantined  ${q.key}: ${q.message} (since ${q.since})`);
  process.stdout.write(lines.join('\n') + '\n');
  return 0;
}

/** What a person can do about the usual failures of a one-off command: the flag involved and the fix. */
function hint(err: unknown, f: Flags): string | null {
  const chain: unknown[] = [];
  for (let e: unknown = err; e && chain.length < 5; e = (e as { cause?: unknown }).cause) chain.push(e);
  const code = (e: unknown) => (e as { code?: unknown }).code;
  const osCode = /\b(ECONNREFUSED|ENOENT|EACCES|ETIMEDOUT|EHOSTUNREACH|ECONNRESET)\b/.exec(chain.map((e) => (e instanceof Error ? e.message : String(e))).join(' '))?.[1];
  if (chain.some((e) => code(e) === 'E_ETCD_UNAVAILABLE' || (e instanceof Error && /^\d+ UNAVAILABLE\b/.test(e.message)))) {
    return `etcd ${f.list('etcd').join(',')} (--etcd, HAPROXY_UPDATER_ETCD): unreachable${osCode ? ` (${osCode})` : ''}: start etcd or point --etcd at it`;
  }
  const sock = chain.find((e) => code(e) === 'E_RUNTIME_CONNECTION' || code(e) === 'E_RUNTIME_TIMEOUT');
  if (sock) {
    const target = String((sock as { context?: { target?: unknown } }).context?.target ?? '');
    return `HAProxy socket ${target || '(runtime)'} (--state-dir, --runtime-socket): not answering${osCode ? ` (${osCode})` : ''}: is \`haproxy-updater run\` running with this --state-dir?`;
  }
  return null;
}

/** `message: cause message` down the cause chain, on one line. */
export function oneLine(err: unknown): string {
  const parts: string[] = [];
  for (let e: unknown = err; e && parts.length < 4; e = (e as { cause?: unknown }).cause) {
    const msg = e instanceof Error ? e.message : String(e);
    if (msg && !parts.some((p) => p.includes(msg))) parts.push(msg);
    if (!(e instanceof Error)) break;
  }
  return parts.join(': ').replace(/\s*\n\s*/g, ' ') || 'failed';
}

/** Flags whose value anyone on the host can read in `ps` or /proc/<pid>/cmdline when given as an argument. */
const SECRET_FLAGS = ['etcd-password', 'stats-password'];

function warnSecretsOnCommandLine(argv: readonly string[]): void {
  for (const name of SECRET_FLAGS) {
    if (!argv.some((a) => a === `--${name}` || a.startsWith(`--${name}=`))) continue;
    log.warn({ flag: name }, `--${name} on the command line shows in \`ps\` to every user of this host: use ${envName(name)} or --${name}-file instead`);
  }
}

export async function main(argv: readonly string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgv(argv);
  } catch (err) {
    process.stderr.write(`haproxy-updater: ${(err as Error).message}\n`);
    return 2;
  }
  if (parsed.command === 'help') {
    process.stdout.write(helpText(parsed.values.get('topic')) + '\n');
    return 0;
  }
  if (parsed.command === 'version') {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
    process.stdout.write(`${pkg.version}\n`);
    return 0;
  }
  const f = new Flags(parsed);
  const oneOff = parsed.command !== 'run';
  try {
    f.checkAll(parsed.command);
  } catch (err) {
    process.stderr.write(`haproxy-updater ${parsed.command}: ${(err as Error).message}\n`);
    return 2;
  }
  const level = f.str('log-level');
  if (level) rootLogger.level = level;
  setLogFormat((f.str('log-format') as 'json' | 'pretty' | undefined) ?? (process.stdout.isTTY ? 'pretty' : 'json'));
  warnSecretsOnCommandLine(argv);
  const handlers: Record<Command, (f: Flags) => Promise<number>> = {
    run: cmdRun,
    register: cmdRegister,
    deregister: cmdDeregister,
    render: cmdRender,
    plan: cmdPlan,
    status: cmdStatus,
    'release-hold': cmdReleaseHold,
  };
  try {
    return await handlers[parsed.command](f);
  } catch (err) {
    if (err instanceof ConfigError || err instanceof StateDirLockedError) {
      process.stderr.write(`haproxy-updater ${parsed.command}: ${err.message}\n`);
      return 2;
    }
    // A person reads these: one line saying what failed and why, no stack.
    if (oneOff || process.stderr.isTTY) {
      process.stderr.write(`haproxy-updater ${parsed.command}: ${hint(err, f) ?? oneLine(err)}\n`);
      return 1;
    }
    log.fatal({ err }, err instanceof UpdaterError ? `${err.code}: ${err.message}` : 'failed');
    return 1;
  }
}
