/**
 * The I/O half of the quarantine (the rules are in src/reconcile/quarantine.ts): when the
 * desired config is refused — `haproxy -c` fails or a new listener cannot be bound — ask
 * HAProxy about subsets of the suspect services, each rendered with its support files into
 * a private probe directory (the live map and pattern files are never touched), and return
 * the config without the culprits.
 */
import { mkdtemp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ConfigInvalidError, InvalidArgumentError, ServiceQuarantinedError } from '../errors.js';
import { logger } from '../log.js';
import { backendName, structureHash, type Registry, type Service } from '../model.js';
import {
  acceptedServices,
  applyQuarantine,
  changedServices,
  findCulprits,
  quarantineEntry,
  serviceKey,
  servicesByBackend,
  tcpServicesOnPorts,
  withoutServices,
  type Culprit,
  type Quarantine,
} from '../reconcile/quarantine.js';
import { readAppliedStructure, type Rendered, type RenderSettings } from '../render/index.js';
import { atomicWrite } from './files.js';
import { stripPrefix, validateConfig, type ValidateOptions } from './validate.js';
import { unavailableNewPorts } from './ports.js';

const log = logger('quarantine');

/** What the reloader needs to leave services out of a refused render; the daemon provides it. */
export interface QuarantineSource {
  /** Backends new or changed since the last accepted config: suspected first. */
  readonly changed: readonly string[];
  /** Every backend of the desired registry: suspected when the changed ones are not the cause. */
  readonly all: readonly string[];
  /** The desired config without `exclude`; with `probeDir`, its support files live there (a probe). */
  render(exclude: ReadonlySet<string>, probeDir?: string): Rendered;
  /** The tcp service (backend) binding each port, for listeners that cannot be bound. */
  portOwners(ports: readonly number[]): ReadonlyMap<number, string>;
  /** Backends that run now in a version the updater has not seen (a restart): never left out, so a refusal naming one stays a refusal. */
  readonly unreplaceable: ReadonlySet<string>;
}

/** Render settings whose support files (maps, url_reg patterns) live in `dir`: for probe configs. */
export function probeSettings(s: RenderSettings, dir: string): RenderSettings {
  return { ...s, hostsMap: path.join(dir, 'hosts.map'), sniMap: path.join(dir, 'sni.map'), urlRegDir: path.join(dir, 'url_reg') };
}

/**
 * Adds to `exclude` the tcp services whose new listeners cannot be bound and returns them;
 * throws ConfigInvalidError when such a listener belongs to no service (one of the flags).
 */
export async function excludeUnbindable(current: string, rendered: Rendered, q: QuarantineSource, exclude: Set<string>): Promise<Culprit[]> {
  const culprits: Culprit[] = [];
  let next = rendered;
  // A service whose ports are partly bindable is still left out whole: half a listener set is a surprise.
  for (let round = 0; round < 3; round++) {
    const unavailable = await unavailableNewPorts(current, next.config);
    if (unavailable.length === 0) return culprits;
    const owners = q.portOwners(unavailable.map((u) => u.port));
    const orphan = unavailable.filter((u) => !owners.has(u.port));
    if (orphan.length) {
      throw new ConfigInvalidError(`listener(s) of the updater's own flags cannot be bound: ${orphan.map((u) => u.reason).join('; ')}`, { unavailable: orphan });
    }
    const stuck = unavailable.filter((u) => q.unreplaceable.has(owners.get(u.port)!));
    if (stuck.length) throw new ConfigInvalidError(`listener(s) of a running service cannot be bound: ${stuck.map((u) => u.reason).join('; ')}`, { unavailable: stuck });
    for (const u of unavailable) {
      const be = owners.get(u.port)!;
      if (exclude.has(be)) continue;
      exclude.add(be);
      culprits.push({ backend: be, message: u.reason });
    }
    next = q.render(exclude);
  }
  return culprits;
}

/**
 * Finds the services `haproxy -c` refuses (changed ones first, then all) and adds them to
 * `exclude`; the caller renders and validates the config without them for real. Throws
 * `refusal` when the cause is not a service (nothing found, or the config without any
 * suspect is refused too).
 */
export async function excludeRefused(
  refusal: ConfigInvalidError,
  q: QuarantineSource,
  exclude: Set<string>,
  opts: ValidateOptions & { workDir: string },
): Promise<{ culprits: Culprit[]; checks: number }> {
  await mkdir(opts.workDir, { recursive: true });
  const root = await mkdtemp(path.join(opts.workDir, '.quarantine-probe-'));
  let checks = 0;
  let probe = 0;
  try {
    const check = async (suspects: readonly string[], include: readonly string[]) => {
      const dir = path.join(root, String(probe++));
      const leftOut = new Set([...exclude, ...suspects.filter((s) => !include.includes(s))]);
      const rendered = q.render(leftOut, dir);
      await mkdir(path.join(dir, 'url_reg'), { recursive: true });
      for (const [file, content] of rendered.files) await writeFile(file, content, { mode: 0o600 });
      const cfg = path.join(dir, 'haproxy.cfg');
      await writeFile(cfg, rendered.config, { mode: 0o600 });
      try {
        await validateConfig(cfg, opts);
        return { ok: true as const };
      } catch (err) {
        if (!(err instanceof ConfigInvalidError)) throw err;
        const alerts = Array.isArray(err.context.alerts) ? (err.context.alerts as string[]) : [];
        // Paths relative to the probe directory read like the real ones (`url_reg/x.pat`).
        const text = alerts.length ? alerts.map(stripPrefix).join(' | ') : err.message;
        return { ok: false as const, message: text.replaceAll(`${dir}/`, '') };
      }
    };
    const changed = q.changed.filter((b) => !exclude.has(b));
    let result = await findCulprits(changed, refusal.message, (inc) => check(changed, inc));
    checks += result.checks;
    if (result.baseRefused !== null || result.culprits.length === 0) {
      // Not (only) a changed service: an unchanged one refused by a newer HAProxy, say.
      const all = q.all.filter((b) => !exclude.has(b));
      if (all.length > changed.length) {
        result = await findCulprits(all, refusal.message, (inc) => check(all, inc));
        checks += result.checks;
      }
    }
    if (result.baseRefused !== null || result.culprits.length === 0) {
      log.warn({ checks, baseRefused: result.baseRefused }, 'refused config: no single service is the cause');
      throw refusal;
    }
    const stuck = result.culprits.filter((c) => q.unreplaceable.has(c.backend));
    if (stuck.length) {
      // Its previous version is unknown (changed while the updater was down): leaving it out would take a serving service away.
      log.warn({ culprits: stuck.map((c) => c.backend) }, 'refused service runs now in a version not seen since start; the render stays refused');
      throw refusal;
    }
    for (const c of result.culprits) exclude.add(c.backend);
    return { culprits: [...result.culprits], checks };
  } finally {
    await rm(root, { recursive: true, force: true }).catch(() => undefined);
  }
}

/** The error that reports one quarantined service (log line, /readyz, status). */
export function quarantinedError(key: string, culprit: Culprit): ServiceQuarantinedError {
  return new ServiceQuarantinedError(`${key} left out of haproxy.cfg: ${culprit.message}`, { key, backend: culprit.backend, haproxy: culprit.message });
}

/** Where the daemon keeps the quarantine for `status` (a sibling of haproxy.cfg). */
export function quarantineFile(stateDir: string): string {
  return path.join(stateDir, 'quarantine.json');
}

/** One line of `quarantine.json` / `status`. */
export interface QuarantineReport {
  readonly key: string;
  readonly backend: string;
  readonly message: string;
  readonly since: string;
}

/** Reads what the daemon left out (for `status`); empty when the file is absent or unreadable. */
export async function readQuarantine(stateDir: string): Promise<QuarantineReport[]> {
  try {
    const parsed = JSON.parse(await readFile(quarantineFile(stateDir), 'utf8')) as unknown;
    return Array.isArray(parsed) ? (parsed as QuarantineReport[]) : [];
  } catch {
    return [];
  }
}

export interface QuarantineBookOptions {
  /** Registry key prefix, for the keys reported. */
  prefix: string;
  stateDir: string;
  /** Called with the number of services left out whenever it changes (the metric). */
  onCount?: (n: number) => void;
}

/**
 * The daemon's quarantine: the entries in force, the registry without them, and the
 * reports (one error line per service when it is left out, one info line when it is tried
 * again, the count metric, `quarantine.json` for `status`).
 */
export class QuarantineBook {
  readonly #o: QuarantineBookOptions;
  #entries: Quarantine = new Map();
  /** Backend → the version HAProxy runs (seen in the registry with the running structure). */
  #accepted = new Map<string, Service>();
  #structureOf: string | null = null;
  #structure: ReadonlyMap<string, string> = new Map();
  #written = '[]';

  constructor(opts: QuarantineBookOptions) {
    this.#o = opts;
  }

  get size(): number {
    return this.#entries.size;
  }

  reports(): QuarantineReport[] {
    return [...this.#entries.values()].map((e) => ({ key: serviceKey(this.#o.prefix, e), backend: e.backend, message: e.message, since: new Date(e.since).toISOString() }));
  }

  /**
   * The registry to plan from: the services still quarantined left out, or at the version
   * that runs now when they ran before; a service whose keys changed is tried again.
   */
  filter(registry: Registry, appliedConfig: string): Registry {
    // Every pass comes here: the running config's structure is read once per config, not per pass.
    if (this.#structureOf !== appliedConfig) {
      this.#structureOf = appliedConfig;
      this.#structure = readAppliedStructure(appliedConfig);
    }
    this.#accepted = acceptedServices(this.#accepted, registry, this.#structure, structureHash);
    const v = applyQuarantine(registry, this.#entries, this.#accepted);
    for (const e of v.released) {
      log.info({ key: serviceKey(this.#o.prefix, e), backend: e.backend }, servicesByBackend(registry).has(e.backend) ? 'quarantined service changed: trying it again' : 'quarantined service removed from the registry');
    }
    if (v.released.length) this.#set(v.kept);
    return v.registry;
  }

  /** Records services HAProxy refused (from a reload result or a render error). */
  add(registry: Registry, culprits: readonly Culprit[], now = Date.now()): void {
    if (culprits.length === 0) return;
    const services = servicesByBackend(registry);
    const next = new Map(this.#entries);
    for (const c of culprits) {
      const svc = services.get(c.backend);
      if (!svc) continue;
      const e = quarantineEntry(svc, c.message, now);
      next.set(c.backend, e);
      const key = serviceKey(this.#o.prefix, e);
      log.error({ err: quarantinedError(key, c), key, backend: c.backend, haproxy: c.message }, 'service quarantined: left out of haproxy.cfg until its keys change; the rest is applied');
    }
    this.#set(next);
  }

  /**
   * The desired config, with services the renderer itself refuses (a value the registry
   * parser let through) quarantined like those `haproxy -c` refuses.
   */
  render(registry: Registry, render: (r: Registry) => Rendered): Rendered {
    for (let i = 0; ; i++) {
      try {
        return render(withoutServices(registry, this.#entries.keys(), this.#accepted));
      } catch (err) {
        const svc = err instanceof InvalidArgumentError && i < 16 ? serviceNamed(registry, err.context.service) : null;
        if (!svc || this.#entries.has(backendName(svc))) throw err;
        this.add(registry, [{ backend: backendName(svc), message: (err as Error).message }]);
      }
    }
  }

  /** What the reloader needs to leave further services out of this render. */
  source(registry: Registry, appliedConfig: string, render: (r: Registry, probeDir?: string) => Rendered): QuarantineSource {
    const kept = withoutServices(registry, this.#entries.keys(), this.#accepted);
    const applied = readAppliedStructure(appliedConfig);
    const accepted = this.#accepted;
    return {
      changed: changedServices(kept, applied, structureHash),
      all: [...servicesByBackend(kept).keys()].sort(),
      render: (exclude, probeDir) => render(withoutServices(kept, exclude, accepted), probeDir),
      portOwners: (ports) => tcpServicesOnPorts(kept, ports),
      unreplaceable: new Set([...applied.keys()].filter((be) => !accepted.has(be))),
    };
  }

  /** Writes `quarantine.json` when it changed (status reads it). */
  async persist(): Promise<void> {
    const text = JSON.stringify(this.reports(), null, 2);
    if (text === this.#written) return;
    await atomicWrite(quarantineFile(this.#o.stateDir), `${text}\n`, 0o600);
    this.#written = text;
  }

  #set(next: Quarantine): void {
    this.#entries = next;
    this.#o.onCount?.(next.size);
  }
}

/** The service an InvalidArgumentError's `service` context names (http first: the renderer renders those first). */
function serviceNamed(registry: Registry, name: unknown): Service | null {
  if (typeof name !== 'string') return null;
  return registry.http.get(name) ?? registry.tcp.get(name) ?? null;
}
