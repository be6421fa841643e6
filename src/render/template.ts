/**
 * Renders haproxy.cfg and its support files (hosts map, SNI map, url_reg pattern files)
 * from the typed Registry. Pure: no I/O (the template is a module, haproxy-cfg.ts).
 *
 * Layout decisions (see also the comments in the template, haproxy-cfg.ts):
 * - HTTP (`fe-http`): url_reg rules first, in service-name order, each `url_reg -f <file>`
 *   (the regex lives in a pattern file, never on a config line); then the Host map
 *   (`Host` lower-cased, port and trailing dot stripped); then `default_backend`:
 *   `http-default` when an http service `default` exists (and is not passthrough),
 *   otherwise `internal-no-route` (503 "no route").
 * - HTTPS (`fe-https`, TCP mode) is served when `httpsPort` is set and there are
 *   certificates or passthrough services: SNI found in the SNI map goes to `tls-<svc>`;
 *   the rest goes (certificates present: `ssl crt-list`, the file src/certs keeps) through a unix socket with PROXY v2 to
 *   `fe-https-terminate`, which routes exactly like `fe-http`, or (no certificates) to
 *   the passthrough `default` service if there is one, else is rejected.
 * - Domains of passthrough services are only in the SNI map: their backends are TCP mode
 *   and cannot serve HTTP requests.
 * - TCP services: `fe-tcp-<svc>` binding each port, `default_backend tcp-<svc>`. A port
 *   already taken (HTTP/HTTPS/stats port, or an earlier service by name) is not bound,
 *   with a warning: HAProxy would pass `-c` and then fail to start.
 * - Fixed proxy names (`fe-*`, `internal-*`, `stats`) cannot clash with service backends,
 *   which always start with `http-`, `tls-` or `tcp-`.
 */
import path from 'node:path';
import { Eta } from 'eta';
import { HAPROXY_CFG_TEMPLATE } from './haproxy-cfg.js';
import {
  BALANCES,
  backendName,
  formatAddrPort,
  healthPathProblem,
  slotCapacity,
  structureHash,
  DEFAULT_SERVICE,
  MAX_SLOTS,
  SLOT_PREFIX,
  NAMED_DEFAULTS,
  type HttpService,
  type Registry,
  type Service,
  type TcpService,
} from '../model.js';
import { desiredMaps } from '../reconcile/domains.js';
import { InvalidArgumentError } from '../errors.js';
import { logger } from '../log.js';
import {
  assertAbsPath,
  assertDomain,
  assertInt,
  assertName,
  assertPort,
  assertProxyName,
  assertToken,
  bindHost,
  logTarget,
  STATS_PASSWORD_RE,
  STATS_USER_RE,
} from './safe.js';

const log = logger('render');

export interface RenderSettings {
  /** Directory for config, maps, state file and sockets. Absolute. */
  stateDir: string;
  /** Address the public frontends bind: `*` (all IPv4, as the seed), an IPv4 literal, or an IPv6 literal (`::` = dual stack). Default `*`. */
  bindAddress: string;
  /** HTTP frontend port. Default 80. */
  httpPort: number;
  /** HTTPS/TLS frontend port, served only when `hasCerts` or a passthrough service exists; null = never. Default 443. */
  httpsPort: number | null;
  /** Stats page (`/admin?stats`) and Prometheus `/metrics`; served only with a `statsPassword`. null = off. Default null. */
  statsPort: number | null;
  /** Stats user, `[A-Za-z0-9._-]{1,64}`. Default `admin`. */
  statsUser: string;
  /** Stats password, `[A-Za-z0-9._~!@%^*+=,/-]{8,128}`; null = stats page not served. Default null. */
  statsPassword: string | null;
  /** Directory of PEM files (cert + key) the updater serves (`--certs`); HAProxy never reads it. Default null. */
  certsDir: string | null;
  /** Whether TLS is terminated: the bind reads `crtList`, which the updater keeps (its first line, a default certificate, makes it never empty). Default false. */
  hasCerts: boolean;
  /** The crt-list file of the terminating bind (`ssl crt-list <file>`), written by the updater (src/certs). Default `<stateDir>/certs.crtlist`. */
  crtList: string;
  /** Runtime API socket (`stats socket ... level admin`). Default `<stateDir>/admin.sock`. */
  adminSocket: string;
  /** Where the updater dumps `show servers state` before a reload. Default `<stateDir>/server-state`. */
  serverStateFile: string;
  /** Host → backend map file. Default `<stateDir>/hosts.map`. */
  hostsMap: string;
  /** SNI → passthrough backend map file. Default `<stateDir>/sni.map`. */
  sniMap: string;
  /** Directory of url_reg pattern files (`<svc>.pat`). Default `<stateDir>/url_reg`. */
  urlRegDir: string;
  /** HAProxy access log: `stdout`, `stderr`, an absolute unix socket (`/dev/log`) or `IPv4:port`; null = no access log. Default null. */
  logTarget?: string | null;
  /** Global `maxconn`; undefined/null = HAProxy derives it from the fd limit. Default undefined. */
  maxconn?: number | null;
  /** Health-check `inter` in ms: also the worst-case delay before a slot leaving maintenance is first checked. Default 500. */
  checkInterMs?: number;
  /** `hard-stop-after`: an old worker still finishing connections is stopped this long after a reload; null = never. Default 300000 (5 min). */
  hardStopAfterMs?: number | null;
  /** `mworker-max-reloads`: an old worker that survived this many reloads is sent SIGTERM; null = unbounded. Default 50. */
  mworkerMaxReloads?: number | null;
}

export function defaultSettings(stateDir: string): RenderSettings {
  return {
    stateDir,
    bindAddress: '*',
    httpPort: 80,
    httpsPort: 443,
    statsPort: null,
    statsUser: 'admin',
    statsPassword: null,
    certsDir: null,
    hasCerts: false,
    crtList: path.join(stateDir, 'certs.crtlist'),
    adminSocket: path.join(stateDir, 'admin.sock'),
    serverStateFile: path.join(stateDir, 'server-state'),
    hostsMap: path.join(stateDir, 'hosts.map'),
    sniMap: path.join(stateDir, 'sni.map'),
    urlRegDir: path.join(stateDir, 'url_reg'),
    logTarget: null,
    checkInterMs: 500,
    hardStopAfterMs: 300_000,
    mworkerMaxReloads: 50,
  };
}

export interface RenderInput {
  registry: Registry;
  /** Slots per backend name; a backend missing here gets `defaultSlots(svc)`. */
  capacity: ReadonlyMap<string, number>;
  settings: RenderSettings;
}

export interface Rendered {
  config: string;
  /** Support files: absolute path → content (hosts.map, sni.map, url_reg pattern files). */
  files: Map<string, string>;
}

export { MAX_SLOTS };

/** Fixed proxy names; none starts with `http-`, `tls-` or `tcp-`, so none can clash with a service backend. */
export const NO_ROUTE_BACKEND = 'internal-no-route';
export const TLS_NO_ROUTE_BACKEND = 'internal-tls-no-route';
export const HTTPS_HOP_BACKEND = 'internal-https-terminate';

/** The default slot count (the model's slotCapacity rule) for every upstream of `svc`. */
export function defaultSlots(svc: Service): number {
  return slotCapacity(svc.upstreams.size, svc.options.minSlots);
}

/** Pattern file of a service's url_reg. */
export function urlRegFile(settings: Pick<RenderSettings, 'urlRegDir'>, svcName: string): string {
  return path.join(settings.urlRegDir, `${assertName(svcName, 'service name')}.pat`);
}

/** Unix socket between fe-https and fe-https-terminate. */
export function httpsHopSocket(settings: Pick<RenderSettings, 'stateDir'>): string {
  return path.join(settings.stateDir, 'https-terminate.sock');
}

// ---------------------------------------------------------------------------- map files

function sortedServices<T extends Service>(m: ReadonlyMap<string, T>): T[] {
  return [...m.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/**
 * A map file: one `domain backend` line per entry, in the given order (sorted by domain by
 * both callers). Every word is checked again: the file is loaded by HAProxy as it is.
 */
export function mapFileText(entries: Iterable<readonly [domain: string, backend: string]>): string {
  let text = '';
  for (const [domain, backend] of entries) text += `${assertDomain(domain, 'map domain')} ${assertProxyName(backend, 'map backend')}\n`;
  return text;
}

/**
 * The routing maps of a registry: the planner's desiredMaps (a domain claimed by two
 * services goes to the first by name), each claim it drops logged once per render.
 */
function routingMaps(registry: Registry): { hosts: string; sni: string } {
  const dm = desiredMaps(registry);
  for (const c of dm.conflicts) {
    log.warn({ domain: c.domain, kept: c.winner, ignored: c.losers, map: c.map }, 'domain claimed by two services; the first by name keeps it');
  }
  return { hosts: mapFileText(dm.hosts), sni: mapFileText(dm.sni) };
}

/** Content of the hosts map: domains of the non-passthrough http services. */
export function renderHostsMap(registry: Registry): string {
  return mapFileText(desiredMaps(registry).hosts);
}

/** Content of the SNI map: domains of the passthrough services → `tls-<svc>`. */
export function renderSniMap(registry: Registry): string {
  return mapFileText(desiredMaps(registry).sni);
}

/**
 * A url_reg pattern file holds one regex per line; HAProxy skips leading blanks and lines
 * starting with `#`. The regex must be one line; an initial blank or `#` is kept by
 * prefixing the empty group `(?:)`, which matches the same URLs.
 */
function patternFileText(svcName: string, regex: unknown): string {
  if (typeof regex !== 'string' || regex.length === 0 || regex.length > 4096 || /[\u0000-\u001f\u007f]/.test(regex)) {
    throw new InvalidArgumentError(`url_reg of ${svcName}: must be one line of 1-4096 printable characters`, { service: svcName });
  }
  return /^[\s#]/.test(regex) ? `(?:)${regex}\n` : `${regex}\n`;
}

// ---------------------------------------------------------------------------- config

let compiled: { eta: Eta } | null = null;

/**
 * A rendered config without its header line naming the registry revision (which every
 * membership change moves): two renders that would run the same HAProxy compare equal.
 */
export function configIdentity(config: string): string {
  return config.replace(/^# Generated by haproxy-updater from registry revision \d+\..*$/m, '');
}

/**
 * Health-check timing of every server: the template's `default-server` line and the
 * overflow servers added at runtime (which `default-server` does not reach) share it.
 */
export function checkTiming(interMs = 500): { interMs: number; fastinterMs: number; downinterMs: number; rise: number; fall: number } {
  return { interMs, fastinterMs: Math.max(100, Math.floor(interMs / 2)), downinterMs: Math.max(interMs, 1000), rise: 2, fall: 3 };
}

function templateEngine(): Eta {
  if (compiled) return compiled.eta;
  const eta = new Eta({
    // Not HTML: no XML escaping, but every interpolation must be one safe config word.
    autoEscape: false,
    autoFilter: true,
    filterFunction: (v: unknown) => assertToken(v, 'template value'),
    autoTrim: false,
    cache: true,
  });
  eta.loadTemplate('@haproxy.cfg', HAPROXY_CFG_TEMPLATE);
  compiled = { eta };
  return eta;
}

function ms(v: number): string {
  return `${v}ms`;
}

type Words = string[];

function bindWords(address: string, port: number, extra: Words = []): Words {
  const { addr, dualStack } = bindHost(address);
  return [formatAddrPort(addr, assertPort(port)), ...(dualStack ? ['v4v6'] : []), ...extra];
}

type HttpsView = {
  binds: Words[];
  sniMap: string;
  fallback: string;
  terminate: { hopBackend: string; socket: string } | null;
  /** The rejecting backend, when unmatched SNI has nowhere to go. */
  reject: string | null;
};

/**
 * Renders haproxy.cfg and the support files. Throws InvalidArgumentError when a value
 * fails the render-time checks (nothing is half-rendered).
 */
export function renderConfig(input: RenderInput): Rendered {
  const { registry, capacity, settings: s } = input;

  // ---- settings
  assertAbsPath(s.stateDir, 'stateDir');
  const adminSocket = assertAbsPath(s.adminSocket, 'adminSocket');
  const serverStateFile = assertAbsPath(s.serverStateFile, 'serverStateFile');
  const hostsMap = assertAbsPath(s.hostsMap, 'hostsMap');
  const sniMap = assertAbsPath(s.sniMap, 'sniMap');
  assertAbsPath(s.urlRegDir, 'urlRegDir');
  const httpPort = assertPort(s.httpPort, 'httpPort');
  bindHost(s.bindAddress);
  const maxconn = s.maxconn === undefined || s.maxconn === null ? null : assertInt(s.maxconn, 1, 10_000_000, 'maxconn');
  const inter = assertInt(s.checkInterMs ?? 500, 100, 3_600_000, 'checkInterMs');
  // Old workers finishing long connections must not pile up across reloads (each holds memory and fds).
  const hardStopAfter = s.hardStopAfterMs === undefined || s.hardStopAfterMs === null ? null : ms(assertInt(s.hardStopAfterMs, 1000, 7 * 86_400_000, 'hardStopAfterMs'));
  const maxReloads = s.mworkerMaxReloads === undefined || s.mworkerMaxReloads === null ? null : assertInt(s.mworkerMaxReloads, 1, 1_000_000, 'mworkerMaxReloads');
  const log_ = s.logTarget ? logTarget(s.logTarget) : null;
  if (!/^[0-9]+$/.test(registry.revision)) {
    throw new InvalidArgumentError(`registry revision ${JSON.stringify(registry.revision)} is not a decimal`, { value: registry.revision });
  }

  const http = sortedServices(registry.http);
  const tcp = sortedServices(registry.tcp);
  for (const svc of [...http, ...tcp]) assertName(svc.name, 'service name');

  const stats = statsView(s, httpPort);
  const { https, crtList } = httpsView(s, registry, http, httpPort, stats !== null, sniMap);
  const files = new Map<string, string>();
  const urlRegs = urlRegFiles(s, http, files);
  const maps = routingMaps(registry);
  files.set(hostsMap, maps.hosts);
  files.set(sniMap, maps.sni);

  const view = {
    revision: registry.revision,
    maxconn,
    hardStopAfter,
    maxReloads,
    adminSocket,
    serverStateFile,
    log: log_,
    check: (({ interMs, fastinterMs, downinterMs, rise, fall }) => ({ inter: ms(interMs), fastinter: ms(fastinterMs), downinter: ms(downinterMs), rise: String(rise), fall: String(fall) }))(checkTiming(inter)),
    httpFrontends: httpFrontendsView(s, httpPort, https, crtList),
    urlRegs,
    hostsMap,
    namedDefaults: NAMED_DEFAULTS,
    httpDefault: httpDefaultBackend(registry),
    https,
    noRoute: NO_ROUTE_BACKEND,
    tcp: tcpFrontendsView(s, tcp, httpPort, https !== null, stats !== null),
    backends: [...http, ...tcp].map((svc) => backendView(svc, capacity)),
    stats,
  };
  const config = templateEngine().render('@haproxy.cfg', view);
  return { config, files };
}

/** The stats listener, served only with a password. */
function statsView(s: RenderSettings, httpPort: number): { binds: Words[]; user: string; password: string } | null {
  if (s.statsPort === null || s.statsPort === undefined) return null;
  const port = assertPort(s.statsPort, 'statsPort');
  if (!s.statsPassword) {
    log.warn({ statsPort: port }, 'stats port set without a stats password: the stats page is not served');
    return null;
  }
  if (!STATS_USER_RE.test(s.statsUser)) throw new InvalidArgumentError(`statsUser must match ${STATS_USER_RE}`, { what: 'statsUser' });
  // The password itself never goes into an error message or log line.
  if (!STATS_PASSWORD_RE.test(s.statsPassword)) {
    throw new InvalidArgumentError(`statsPassword must match ${STATS_PASSWORD_RE}`, { what: 'statsPassword' });
  }
  if (port === httpPort) throw new InvalidArgumentError('statsPort equals httpPort', { statsPort: port });
  return { binds: [bindWords(s.bindAddress, port)], user: s.statsUser, password: s.statsPassword };
}

/** `fe-https`: SNI passthrough, TLS termination through the hop socket, or rejection. */
function httpsView(
  s: RenderSettings,
  registry: Registry,
  http: readonly HttpService[],
  httpPort: number,
  statsServed: boolean,
  sniMap: string,
): { https: HttpsView | null; crtList: string | null } {
  const passthrough = http.filter((svc) => svc.sslPassthrough);
  let crtList: string | null = null;
  if (s.hasCerts) {
    if (!s.certsDir) throw new InvalidArgumentError('hasCerts is set but certsDir is not', { what: 'certsDir' });
    assertAbsPath(s.certsDir, 'certsDir');
    // HAProxy reads only the crt-list the updater keeps, so entries can change at runtime.
    crtList = assertAbsPath(s.crtList, 'crtList');
  }
  const wantsHttps = s.hasCerts || passthrough.length > 0;
  if (wantsHttps && (s.httpsPort === null || s.httpsPort === undefined)) {
    log.warn({ passthrough: passthrough.map((p) => p.name), hasCerts: s.hasCerts }, 'no httpsPort: TLS (termination and passthrough) not served');
  }
  if (!wantsHttps || s.httpsPort === null || s.httpsPort === undefined) return { https: null, crtList };
  const port = assertPort(s.httpsPort, 'httpsPort');
  if (port === httpPort || (statsServed && port === s.statsPort)) throw new InvalidArgumentError('httpsPort equals httpPort or statsPort', { httpsPort: port });
  let terminate: { hopBackend: string; socket: string } | null = null;
  let fallback = TLS_NO_ROUTE_BACKEND;
  if (crtList) {
    const socket = assertAbsPath(httpsHopSocket(s), 'https hop socket');
    // sun_path is 108 bytes including the NUL; HAProxy also appends `.<pid>.tmp` while binding.
    if (Buffer.byteLength(socket) > 90) {
      throw new InvalidArgumentError(`stateDir too long for a unix socket path (${socket})`, { what: 'stateDir' });
    }
    terminate = { hopBackend: HTTPS_HOP_BACKEND, socket };
    fallback = HTTPS_HOP_BACKEND;
  } else {
    const def = registry.http.get(DEFAULT_SERVICE);
    if (def?.sslPassthrough) fallback = backendName(def);
  }
  return { https: { binds: [bindWords(s.bindAddress, port)], sniMap, fallback, terminate, reject: fallback === TLS_NO_ROUTE_BACKEND ? fallback : null }, crtList };
}

/** `default_backend` of the HTTP frontends: the `default` service, unless it is passthrough. */
function httpDefaultBackend(registry: Registry): string {
  const defaultHttp = registry.http.get(DEFAULT_SERVICE);
  return defaultHttp && !defaultHttp.sslPassthrough ? backendName(defaultHttp) : NO_ROUTE_BACKEND;
}

/** The HTTP frontends: plain, and the TLS-terminating one behind fe-https. */
function httpFrontendsView(s: RenderSettings, httpPort: number, https: HttpsView | null, crtList: string | null) {
  const frontends: Array<{ name: string; proto: 'http' | 'https'; binds: Words[] }> = [{ name: 'fe-http', proto: 'http', binds: [bindWords(s.bindAddress, httpPort)] }];
  if (https?.terminate && crtList) {
    frontends.push({
      name: 'fe-https-terminate',
      proto: 'https',
      binds: [[`unix@${https.terminate.socket}`, 'mode', '600', 'accept-proxy', 'ssl', 'crt-list', crtList, 'alpn', 'h2,http/1.1']],
    });
  }
  return frontends;
}

/** The url_reg pattern files (into `files`) and the rules that use them. */
function urlRegFiles(s: RenderSettings, http: readonly HttpService[], files: Map<string, string>): Array<{ backend: string; file: string }> {
  const urlRegs: Array<{ backend: string; file: string }> = [];
  for (const svc of http) {
    if (svc.urlReg === null) continue;
    if (svc.sslPassthrough) {
      log.warn({ service: svc.name }, 'url_reg ignored for a passthrough service (no HTTP to match)');
      continue;
    }
    const file = assertAbsPath(urlRegFile(s, svc.name), 'url_reg file');
    files.set(file, patternFileText(svc.name, svc.urlReg));
    urlRegs.push({ backend: backendName(svc), file });
  }
  return urlRegs;
}

/** `fe-tcp-<svc>` per tcp service; ports already taken are skipped (HAProxy would fail at startup). */
function tcpFrontendsView(s: RenderSettings, tcp: readonly TcpService[], httpPort: number, httpsServed: boolean, statsServed: boolean) {
  const taken = new Map<number, string>([[httpPort, 'httpPort']]);
  if (httpsServed && s.httpsPort) taken.set(s.httpsPort, 'httpsPort');
  if (statsServed && s.statsPort) taken.set(s.statsPort, 'statsPort');
  const frontends: Array<{ frontend: string; backend: string; binds: Words[] }> = [];
  for (const svc of tcp) {
    const binds: Words[] = [];
    for (const port of svc.ports) {
      assertPort(port, `port of ${svc.name}`);
      const owner = taken.get(port);
      if (owner !== undefined) {
        log.warn({ service: svc.name, port, owner }, 'tcp port already in use by another listener; not bound');
        continue;
      }
      taken.set(port, svc.name);
      binds.push(bindWords(s.bindAddress, port));
    }
    if (binds.length === 0) continue;
    frontends.push({ frontend: assertProxyName(`fe-tcp-${svc.name}`), backend: backendName(svc), binds });
  }
  return frontends;
}

/** One backend: mode, balance, health check and the server-template line of its slots. */
function backendView(svc: Service, capacity: ReadonlyMap<string, number>) {
  const name = assertProxyName(backendName(svc), 'backend name');
  const o = svc.options;
  const slots = assertInt(capacity.get(name) ?? defaultSlots(svc), 1, MAX_SLOTS, `capacity of ${name}`);
  const tls = svc.kind === 'http' && svc.sslPassthrough;
  const healthPath = svc.kind === 'http' && o.healthPath !== null ? assertHealthPath(o.healthPath, svc.name) : null;
  const slotLine: Words = [SLOT_PREFIX, `1-${slots}`, 'slot.invalid:1', 'check', 'disabled', 'init-addr', 'last,0.0.0.0'];
  if (o.maxconn !== null) slotLine.push('maxconn', String(assertInt(o.maxconn, 1, 10_000_000, `maxconn of ${svc.name}`)));
  // A passthrough upstream speaks TLS: its HTTP check must too.
  if (tls && healthPath !== null) slotLine.push('check-ssl', 'verify', 'none');
  return {
    name,
    hash: structureHash(svc),
    mode: svc.kind === 'tcp' || tls ? 'tcp' : 'http',
    balance: assertBalance(o.balance, svc.name),
    healthPath,
    slotLine,
  };
}

function assertBalance(v: unknown, svc: string): string {
  if (typeof v !== 'string' || !(BALANCES as readonly string[]).includes(v)) throw new InvalidArgumentError(`balance of ${svc}: ${JSON.stringify(v)} is not supported`, { service: svc });
  return v;
}

/** The model's healthPath rule, the same one the registry parser applies. */
function assertHealthPath(v: unknown, svc: string): string {
  const problem = typeof v === 'string' ? healthPathProblem(v) : 'is not a string';
  if (problem !== null) {
    throw new InvalidArgumentError(`healthPath of ${svc}: ${JSON.stringify(v)} ${problem}`, { service: svc, value: v });
  }
  return v as string;
}
