/**
 * `haproxy-updater <command>`: run, register, deregister, render, plan, status.
 * Flags and env vars come from the table in config.ts.
 */
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { readFileSync, readdirSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { parseArgv, Flags, helpText, type Command } from './config.js';
import { ConfigError, UpdaterError } from './errors.js';
import { rootLogger, logger } from './log.js';
import { Daemon, type DaemonOptions } from './daemon/index.js';
import { parseRegistry, registerUpstream, deregisterUpstream, parseUpstreamValue, createEtcdClient } from './watch/index.js';
import { renderConfig, defaultSettings, type RenderSettings } from './render/index.js';
import { atomicWrite } from './reload/index.js';
import { plan as makePlan, describePlan, initialCapacity, isClearedAddr } from './reconcile/index.js';
import { RuntimeClient, MasterClient } from './runtime/index.js';
import { observe } from './daemon/index.js';
import { backendName, type Registry } from './model.js';

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
      hasCerts = readdirSync(certs).some((n) => n.endsWith('.pem'));
    } catch (err) {
      throw new ConfigError(`--certs (HAPROXY_UPDATER_CERTS): cannot read ${certs}`, { flag: 'certs' }, { cause: err });
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
    statsUser: f.str('stats-user') ?? 'admin',
    statsPassword,
    certsDir: certs,
    hasCerts,
    adminSocket: runtimeSocket ?? base.adminSocket,
  };
}

async function loadRegistryOnce(etcd: ReturnType<typeof etcdOptions>): Promise<{ registry: Registry; rejections: { key: string; reason: string }[] }> {
  // The shared client setup (as the watcher and register use): default roots when no CA
  // is given, cert/key checked together, per-call deadlines, no circuit breaker.
  const client = await createEtcdClient({ endpoints: etcd.endpoints, tls: etcd.tls, auth: etcd.auth });
  try {
    const res = await client.getAll().prefix(etcd.prefix + '/').exec();
    const kvs = res.kvs.map((kv) => ({ key: kv.key.toString('utf8'), value: kv.value.toString('utf8') }));
    return parseRegistry(kvs, etcd.prefix, String(res.header.revision));
  } finally {
    client.close();
  }
}

async function cmdRun(f: Flags): Promise<number> {
  const stateDir = f.path('state-dir')!;
  const mode = f.str('haproxy') as 'managed' | 'external';
  const settings = renderSettings(f);
  if (mode === 'external' && !f.isSet('master-socket')) {
    throw new ConfigError('--haproxy external needs --master-socket (and --runtime-socket) of the running HAProxy', { flag: 'master-socket' });
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
    holdUntilHealthy: f.bool('hold-until-healthy'),
    verifyIntervalMs: Math.max(100, f.ms('verify-interval')),
    reloadMinIntervalMs: f.ms('reload-min-interval'),
    consolidateAfterMs: f.ms('consolidate-after'),
    coalesceMs: f.ms('coalesce'),
  };
  const listen = f.hostPort('listen');
  const daemon = new Daemon(opts);
  let server: http.Server | null = null;
  if (listen) {
    server = http.createServer((req, res) => {
      void (async () => {
        if (req.url === '/healthz') {
          res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
        } else if (req.url === '/readyz') {
          const r = daemon.readiness();
          res.writeHead(r.ready ? 200 : 503, { 'content-type': 'text/plain' }).end(r.ready ? 'ready\n' : r.reasons.join('\n') + '\n');
        } else if (req.url === '/metrics') {
          res.writeHead(200, { 'content-type': daemon.metrics.registry.contentType }).end(await daemon.metrics.registry.metrics());
        } else {
          res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
        }
      })().catch((err: unknown) => {
        log.error({ err }, 'http handler failed');
        if (!res.headersSent) res.writeHead(500).end();
      });
    });
    await new Promise<void>((resolve, reject) => {
      server!.once('error', (err) => reject(new ConfigError(`--listen: cannot listen on ${listen.host}:${listen.port}`, { flag: 'listen' }, { cause: err })));
      server!.listen(listen.port, listen.host, () => resolve());
    });
    log.info({ listen: `${listen.host}:${listen.port}` }, 'serving /healthz, /readyz, /metrics');
  }
  let stopping: Promise<void> | null = null;
  const stop = (signal: string) => {
    if (stopping) return;
    log.info({ signal }, 'stopping: finishing the current step');
    stopping = (async () => {
      await daemon.stop();
      server?.close();
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
  const stop = new Promise<'stop'>((resolve) => {
    process.once('SIGTERM', () => resolve('stop'));
    process.once('SIGINT', () => resolve('stop'));
  });
  // A registrar outlives etcd outages: a lost lease (etcd away longer than the TTL) or an
  // unreachable etcd is retried with backoff; bad input is not.
  for (let attempt = 0; ; ) {
    let reg: Awaited<ReturnType<typeof registerUpstream>>;
    try {
      reg = await registerUpstream(opts);
    } catch (err) {
      if (!(err instanceof UpdaterError && err.recoverable)) throw err;
      const delay = Math.min(5000, 250 * 2 ** attempt++);
      log.warn({ err, delayMs: delay }, 'etcd unreachable: registering again shortly');
      if ((await Promise.race([stop, new Promise<'retry'>((r) => setTimeout(() => r('retry'), delay))])) === 'stop') return 0;
      continue;
    }
    attempt = 0;
    log.info({ kind, service, id, addr: addrText, ttlMs }, 'registered; keeping the lease alive until SIGINT/SIGTERM');
    const outcome = await Promise.race([stop, reg.lost.then(() => 'lost' as const)]);
    if (outcome === 'stop') {
      await reg.close();
      break;
    }
    log.warn({ service, id }, 'lease lost (etcd unreachable for longer than the TTL): registering again');
  }
  log.info({ service, id }, 'deregistered');
  return 0;
}

async function cmdDeregister(f: Flags): Promise<number> {
  const etcd = etcdOptions(f);
  await deregisterUpstream({ ...etcd, kind: f.str('kind') as 'http' | 'tcp', service: f.req('service'), id: f.req('id') });
  return 0;
}

async function cmdRender(f: Flags): Promise<number> {
  const { registry, rejections } = await loadRegistryOnce(etcdOptions(f));
  for (const r of rejections) log.warn({ key: r.key, reason: r.reason }, 'registry entry rejected');
  const settings = renderSettings(f);
  const rendered = renderConfig({ registry, capacity: initialCapacity(registry), settings });
  const out = f.path('out');
  if (!out) {
    process.stdout.write(rendered.config);
    return 0;
  }
  await mkdir(path.dirname(out), { recursive: true });
  for (const [file, content] of rendered.files) {
    await mkdir(path.dirname(file), { recursive: true });
    await atomicWrite(file, content);
  }
  await atomicWrite(out, rendered.config);
  log.info({ out, files: [...rendered.files.keys()] }, 'rendered');
  return 0;
}

/** What status needs: where the sockets and maps are, not how to render. */
function socketSettings(f: Flags): Pick<RenderSettings, 'adminSocket' | 'hostsMap' | 'sniMap'> {
  const base = defaultSettings(f.path('state-dir')!);
  return { adminSocket: f.path('runtime-socket') ?? base.adminSocket, hostsMap: base.hostsMap, sniMap: base.sniMap };
}

async function connectHaproxy(f: Flags, settings: Pick<RenderSettings, 'adminSocket' | 'hostsMap' | 'sniMap'>) {
  const runtime = new RuntimeClient({ path: settings.adminSocket }, { timeoutMs: 5000 });
  const stateDir = f.path('state-dir')!;
  const cfg = await readFile(path.join(stateDir, 'haproxy.cfg'), 'utf8').catch(() => '');
  const observed = await observe(runtime, settings, cfg);
  return { runtime, observed };
}

async function cmdPlan(f: Flags): Promise<number> {
  const { registry, rejections } = await loadRegistryOnce(etcdOptions(f));
  const settings = renderSettings(f);
  const { observed } = await connectHaproxy(f, settings);
  const p = makePlan(registry, observed, { now: Date.now(), drainTimeoutMs: f.ms('drain-timeout'), holdUntilHealthy: f.bool('hold-until-healthy'), drainStartedAt: new Map() });
  for (const r of rejections) process.stdout.write(`rejected  ${r.key}: ${r.reason}\n`);
  process.stdout.write(describePlan(p).join('\n') + '\n');
  return 0;
}

async function cmdStatus(f: Flags): Promise<number> {
  const settings = socketSettings(f);
  const { observed } = await connectHaproxy(f, settings);
  const master = new MasterClient({ path: f.path('master-socket') ?? path.join(f.path('state-dir')!, 'master.sock') });
  const proc = await master.showProc().catch(() => null);
  let registry: Registry | null = null;
  try {
    registry = (await loadRegistryOnce(etcdOptions(f))).registry;
  } catch (err) {
    log.warn({ err }, 'etcd unreachable: showing HAProxy only');
  }
  const byAddr = new Map<string, string>();
  for (const svc of [...(registry?.http.values() ?? []), ...(registry?.tcp.values() ?? [])]) {
    for (const u of svc.upstreams.values()) byAddr.set(`${backendName(svc)}|${u.addr}:${u.port}`, u.id);
  }
  const rows: string[][] = [['BACKEND', 'SLOT', 'UPSTREAM', 'ADDRESS', 'ADMIN', 'STATUS', 'CHECK', 'SESSIONS']];
  for (const be of [...observed.backends.values()].sort((a, b) => a.name.localeCompare(b.name))) {
    for (const s of be.servers) {
      const free = s.maint && isClearedAddr(s.addr, s.port);
      rows.push([
        be.name,
        s.name,
        free ? '-' : (byAddr.get(`${be.name}|${s.addr}:${s.port}`) ?? '?'),
        free ? '(free)' : `${s.addr}:${s.port}`,
        s.maint ? 'maint' : s.drain ? 'drain' : 'ready',
        s.status,
        s.checkStatus,
        String(s.scur),
      ]);
    }
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  const lines = rows.map((r) => r.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd());
  if (proc) lines.unshift(`haproxy master ${proc.masterPid}: ${proc.reloads} reloads (failed: ${proc.failed}), workers ${proc.workers.map((w) => w.pid).join(',')}`);
  process.stdout.write(lines.join('\n') + '\n');
  return 0;
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
  const level = f.str('log-level');
  if (level) rootLogger.level = level;
  const handlers: Record<Command, (f: Flags) => Promise<number>> = {
    run: cmdRun,
    register: cmdRegister,
    deregister: cmdDeregister,
    render: cmdRender,
    plan: cmdPlan,
    status: cmdStatus,
  };
  try {
    return await handlers[parsed.command](f);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`haproxy-updater: ${err.message}\n`);
      return 2;
    }
    log.fatal({ err }, err instanceof UpdaterError ? `${err.code}: ${err.message}` : 'failed');
    return 1;
  }
}
