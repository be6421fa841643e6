/**
 * The baseline this project replaces, implemented in the benchmark: confd watching etcd and,
 * on every change, rendering haproxy.cfg, checking it and reloading HAProxy (the seed's
 * `confd` + `check_cmd` + `reload_cmd`). To compare like with like it uses this project's
 * own pieces wherever confd had an equivalent:
 *
 * - watch: src/watch's RegistryWatcher (same etcd watch, same parsing and validation);
 * - template: src/render's renderConfig, the SAME template, with one post-processing step:
 *   the `server-template s 1-N slot.invalid:1 ...` line of each backend is replaced by one
 *   explicit `server <id> <addr>:<port> check` line per upstream (sorted by id; `weight W`
 *   when it is not 1; `disabled` for state maint, `weight 0` for drain), which is how the
 *   seed's confd template wrote its upstreams. No slots, no runtime API;
 * - check + write: src/render's writeRendered (support files, candidate `haproxy -c`, atomic
 *   rename);
 * - reload: the master CLI `reload` of `haproxy -W` (MasterClient.reload, which waits for
 *   the new worker) instead of the seed's full restart, i.e. the kindest version of confd.
 *
 * Changes are coalesced like confd does: while one render + reload runs, later changes
 * only mark the registry dirty, and one more round runs afterwards with the latest state.
 * There is no reload guard and no rate limit. It runs in the benchmark process.
 */
import path from 'node:path';
import { backendName, type Registry, type Service } from '../src/model.js';
import { MasterClient } from '../src/runtime/index.js';
import { defaultSettings, renderConfig, writeRendered, type RenderSettings } from '../src/render/index.js';
import { RegistryWatcher } from '../src/watch/index.js';
import { startHaproxy, socketCommand, waitFor, type HaproxyHandle } from '../testkit/index.js';

export interface ConfdOptions {
  etcdEndpoint: string;
  prefix: string;
  dir: string;
  httpPort: number;
}

/** The seed-style config: explicit `server` lines instead of the slot template. */
export function explicitServers(config: string, registry: Registry): string {
  const byBackend = new Map<string, Service>();
  for (const svc of [...registry.http.values(), ...registry.tcp.values()]) byBackend.set(backendName(svc), svc);
  let current: Service | undefined;
  const out: string[] = [];
  for (const line of config.split('\n')) {
    const section = /^(global|defaults|frontend|backend|listen)\b\s*(\S*)/.exec(line);
    if (section) current = section[1] === 'backend' ? byBackend.get(section[2] ?? '') : undefined;
    if (current && /^\s*server-template\s/.test(line)) {
      const ups = [...current.upstreams.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
      const seen = new Set<string>();
      for (const u of ups) {
        const addr = u.addr.includes(':') ? `[${u.addr}]:${u.port}` : `${u.addr}:${u.port}`;
        if (seen.has(addr)) continue;
        seen.add(addr);
        const words = [`    server ${u.id} ${addr} check`];
        if (u.state === 'drain') words.push('weight 0');
        else if (u.weight !== 1) words.push(`weight ${u.weight}`);
        if (u.state === 'maint') words.push('disabled');
        out.push(words.join(' '));
      }
      continue;
    }
    out.push(line);
  }
  return out.join('\n');
}

export class ConfdBaseline {
  readonly settings: RenderSettings;
  readonly cfgPath: string;
  readonly master: MasterClient;
  haproxy: HaproxyHandle | null = null;
  /** Render + check + reload rounds completed. */
  rounds = 0;
  errors = 0;
  /** etcd revision of the registry the running config was rendered from. */
  appliedRevision = 0n;
  lastError: string | null = null;
  readonly #o: ConfdOptions;
  #watcher: RegistryWatcher | null = null;
  #latest: Registry | null = null;
  #dirty = false;
  #running: Promise<void> | null = null;
  #idleWaiters: Array<() => void> = [];

  constructor(o: ConfdOptions) {
    this.#o = o;
    this.settings = { ...defaultSettings(o.dir), bindAddress: '127.0.0.1', httpPort: o.httpPort, httpsPort: null };
    this.cfgPath = path.join(o.dir, 'haproxy.cfg');
    this.master = new MasterClient({ path: path.join(o.dir, 'master.sock') });
  }

  render(registry: Registry) {
    const r = renderConfig({ registry, capacity: new Map(), settings: this.settings });
    return { config: explicitServers(r.config, registry), files: r.files };
  }

  /** Loads the registry, writes the first config, starts HAProxy, then follows the watch. */
  async start(): Promise<void> {
    const watcher = new RegistryWatcher({ endpoints: [this.#o.etcdEndpoint], prefix: this.#o.prefix });
    this.#watcher = watcher;
    let first: Registry | null = null;
    watcher.onUpdate((u) => {
      if (u.stale) return;
      if (!this.haproxy) {
        first = u.registry;
        return;
      }
      this.#latest = u.registry;
      this.#kick();
    });
    await watcher.start();
    const reg = first ?? { revision: '0', http: new Map(), tcp: new Map() };
    const rendered = this.render(reg);
    await writeRendered(rendered, this.cfgPath);
    this.haproxy = await startHaproxy(rendered.config, { dir: this.#o.dir });
    await waitFor(async () => (await socketCommand(this.settings.adminSocket, 'show info')).includes('Pid:'), { what: 'baseline admin socket' });
    // A change that arrived while HAProxy was starting.
    if (this.#latest) this.#kick();
  }

  #kick(): void {
    this.#dirty = true;
    if (!this.#running) this.#running = this.#loop();
  }

  async #loop(): Promise<void> {
    try {
      while (this.#dirty) {
        this.#dirty = false;
        const reg = this.#latest;
        if (!reg) continue;
        try {
          await writeRendered(this.render(reg), this.cfgPath);
          await this.master.reload({ timeoutMs: 15_000, pollIntervalMs: 20 });
          this.rounds++;
          this.appliedRevision = BigInt(reg.revision);
        } catch (err) {
          this.errors++;
          this.lastError = err instanceof Error ? err.message : String(err);
        }
      }
    } finally {
      this.#running = null;
      for (const w of this.#idleWaiters.splice(0)) w();
    }
  }

  /** Resolves when no round runs and none is pending. */
  async idle(): Promise<void> {
    while (this.#running || this.#dirty) {
      await new Promise<void>((r) => this.#idleWaiters.push(r));
    }
  }

  /** Resolves once a config rendered from etcd revision `rev` or later runs (false on timeout). */
  async waitApplied(rev: bigint, timeoutMs = 30_000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (this.appliedRevision < rev) {
      if (Date.now() > deadline) return false;
      await new Promise((r) => setTimeout(r, 5));
    }
    return true;
  }

  /** True while a round runs or is pending. */
  get busy(): boolean {
    return this.#running !== null || this.#dirty;
  }

  async stop(): Promise<void> {
    await this.#watcher?.stop().catch(() => undefined);
    await this.idle().catch(() => undefined);
    await this.haproxy?.stop();
  }
}
