/**
 * Fixtures and a small pure HAProxy simulator for the planner tests. The simulator follows
 * the behaviour recorded in ../../shared/haproxy-2.6-runtime-notes.md and HAProxy's
 * srv_adm_set_{maint,drain,ready}, and asserts the runtime order rules on every op.
 */
import assert from 'node:assert/strict';
import {
  DEFAULT_OPTIONS,
  backendName,
  structureHash,
  type HttpService,
  type Registry,
  type Balance,
  type Service,
  type ServiceOptions,
  type TcpService,
  type Upstream,
  type UpstreamState,
} from '../../src/model.js';
import {
  desiredMaps,
  isClearedAddr,
  isSlotName,
  STATIC_LB,
  type ObservedBackend,
  type ObservedServer,
  type ObservedState,
  type Op,
  type Plan,
  type PlanContext,
} from '../../src/reconcile/index.js';

// ------------------------------------------------------------------ registry builders

export function up(id: string, hostport: string, extra: Partial<Pick<Upstream, 'weight' | 'state'>> = {}): Upstream {
  const i = hostport.lastIndexOf(':');
  return { id, addr: hostport.slice(0, i), port: Number(hostport.slice(i + 1)), weight: 1, state: 'ready', ...extra };
}

export function http(
  name: string,
  upstreams: Upstream[],
  o: { domains?: string[]; sslPassthrough?: boolean; urlReg?: string | null; options?: Partial<ServiceOptions> } = {},
): HttpService {
  return {
    kind: 'http',
    name,
    upstreams: new Map(upstreams.map((u) => [u.id, u])),
    options: { ...DEFAULT_OPTIONS, ...o.options },
    domains: [...new Set(o.domains ?? [])].sort(),
    urlReg: o.urlReg ?? null,
    sslPassthrough: o.sslPassthrough ?? false,
  };
}

export function tcp(name: string, upstreams: Upstream[], ports: number[] = [9000], options: Partial<ServiceOptions> = {}): TcpService {
  return { kind: 'tcp', name, upstreams: new Map(upstreams.map((u) => [u.id, u])), options: { ...DEFAULT_OPTIONS, ...options }, ports };
}

export function reg(...services: Service[]): Registry {
  return {
    revision: '1',
    http: new Map(services.filter((s): s is HttpService => s.kind === 'http').map((s) => [s.name, s])),
    tcp: new Map(services.filter((s): s is TcpService => s.kind === 'tcp').map((s) => [s.name, s])),
  };
}

// ------------------------------------------------------------------ observed builders

export function freeSlot(backend: string, idx: number, extra: Partial<ObservedServer> = {}): ObservedServer {
  return {
    backend,
    name: `s${idx}`,
    addr: '0.0.0.0',
    port: 1,
    maint: true,
    drain: false,
    up: false,
    weight: 1,
    scur: 0,
    qcur: 0,
    status: 'MAINT',
    checkStatus: '',
    dynamic: false,
    ...extra,
  };
}

/** A ready, UP slot holding hostport. */
export function activeSlot(backend: string, idx: number, hostport: string, extra: Partial<ObservedServer> = {}): ObservedServer {
  const i = hostport.lastIndexOf(':');
  return freeSlot(backend, idx, {
    addr: hostport.slice(0, i),
    port: Number(hostport.slice(i + 1)),
    maint: false,
    up: true,
    status: 'UP',
    checkStatus: 'L4OK',
    ...extra,
  });
}

export function dynServer(backend: string, name: string, hostport: string, extra: Partial<ObservedServer> = {}): ObservedServer {
  return { ...activeSlot(backend, 1, hostport), name, dynamic: true, checkEnabled: true, ...extra };
}

/** A backend of `slots` template slots; `servers` replace the free slot of the same name or are appended. */
export function backend(name: string, slots: number, servers: ObservedServer[] = [], hash: string | null = null): ObservedBackend {
  const list: ObservedServer[] = [];
  for (let i = 1; i <= slots; i++) list.push(servers.find((s) => s.name === `s${i}`) ?? freeSlot(name, i));
  for (const s of servers) if (!list.includes(s)) list.push(s);
  return { name, servers: list, templateSlots: list.filter((s) => !s.dynamic).length, structureHash: hash };
}

export function observed(
  backends: ObservedBackend[],
  hostsMap: Record<string, string> = {},
  sniMap: Record<string, string> = {},
): ObservedState {
  return {
    backends: new Map(backends.map((b) => [b.name, b])),
    hostsMap: new Map(Object.entries(hostsMap)),
    sniMap: new Map(Object.entries(sniMap)),
  };
}

/** The backend of `svc` with the running config's hash and `servers`. */
export function backendOf(svc: Service, slots: number, servers: ObservedServer[] = []): ObservedBackend {
  return backend(backendName(svc), slots, servers, structureHash(svc));
}

export function ctx(over: Partial<PlanContext> = {}): PlanContext {
  return { now: 1_000_000, drainTimeoutMs: 10_000, holdUntilHealthy: false, drainStartedAt: new Map(), ...over };
}

/** Ops in a compact comparable form: `kind backend/server args`. */
export function brief(ops: readonly Op[]): string[] {
  return ops.map((o) => {
    switch (o.kind) {
      case 'set-addr':
        return `set-addr ${o.backend}/${o.server} ${o.addr}:${o.port}`;
      case 'set-state':
        return `set-state ${o.backend}/${o.server} ${o.state}`;
      case 'set-weight':
        return `set-weight ${o.backend}/${o.server} ${o.weight}`;
      case 'set-health':
        return `set-health ${o.backend}/${o.server} ${o.health}`;
      case 'add-server':
        return `add-server ${o.backend}/${o.server} ${o.addr}:${o.port} w${o.weight}`;
      case 'enable-health':
        return `enable-health ${o.backend}/${o.server}`;
      case 'del-server':
        return `del-server ${o.backend}/${o.server}`;
      case 'map-add':
        return `map-add ${o.map} ${o.key} ${o.value}`;
      case 'map-set':
        return `map-set ${o.map} ${o.key} ${o.value}`;
      case 'map-del':
        return `map-del ${o.map} ${o.key}`;
      case 'write-map-file':
        return `write-map-file ${o.map}`;
      case 'add-backend':
        return `add-backend ${o.backend} from ${o.from}`;
      case 'publish-backend':
      case 'unpublish-backend':
      case 'del-backend':
        return `${o.kind} ${o.backend}`;
    }
  });
}

// ------------------------------------------------------------------ PRNG

/** mulberry32: small seeded PRNG, so a failing sequence can be replayed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ------------------------------------------------------------------ simulator

interface SimServer {
  name: string;
  addr: string;
  port: number;
  maint: boolean;
  drain: boolean;
  up: boolean;
  weight: number;
  scur: number;
  qcur: number;
  checkStatus: string;
  dynamic: boolean;
  checkEnabled: boolean;
}

interface SimBackend {
  name: string;
  servers: SimServer[];
  hash: string;
  staticLb: boolean;
}

/**
 * HAProxy as far as the planner can see it. Template slots `s<N>`; dynamic servers; maps;
 * map files. Every op is checked against the runtime rules (addr only while in maint,
 * del only in maint and idle, map add never duplicates, a map value names an existing
 * backend, no server out of maint on a cleared address).
 */
export class Sim {
  backends = new Map<string, SimBackend>();
  maps = { hosts: new Map<string, string>(), sni: new Map<string, string>() };
  files = { hosts: new Map<string, string>(), sni: new Map<string, string>() };
  now = 1_000_000;
  drainStartedAt = new Map<string, number>();
  reloads = 0;
  /** Addresses whose health checks fail. */
  dead = new Set<string>();

  /** A fresh HAProxy started from a render of `registry` (as after the first reload). */
  static start(registry: Registry, capacity: ReadonlyMap<string, number>): Sim {
    const sim = new Sim();
    sim.reload(registry, capacity);
    sim.reloads = 0;
    return sim;
  }

  observe(): ObservedState {
    const backends = new Map<string, ObservedBackend>();
    for (const b of this.backends.values()) {
      const servers = b.servers.map(
        (s): ObservedServer => ({
          backend: b.name,
          name: s.name,
          addr: s.addr,
          port: s.port,
          maint: s.maint,
          drain: s.drain,
          up: s.up,
          weight: s.weight,
          scur: s.scur,
          qcur: s.qcur,
          status: s.maint ? 'MAINT' : s.drain ? 'DRAIN' : s.up ? 'UP' : 'DOWN',
          checkStatus: s.checkStatus,
          dynamic: s.dynamic,
          checkEnabled: s.checkEnabled,
        }),
      );
      backends.set(b.name, { name: b.name, servers, templateSlots: servers.filter((s) => !s.dynamic).length, structureHash: b.hash });
    }
    return { backends, hostsMap: new Map(this.maps.hosts), sniMap: new Map(this.maps.sni) };
  }

  ctx(over: Partial<PlanContext> = {}): PlanContext {
    return { now: this.now, drainTimeoutMs: 10_000, holdUntilHealthy: false, drainStartedAt: this.drainStartedAt, ...over };
  }

  private srv(backend: string, server: string): { b: SimBackend; s: SimServer } {
    const b = this.backends.get(backend);
    assert.ok(b, `No such backend: ${backend}`);
    const s = b.servers.find((x) => x.name === server);
    assert.ok(s, `No such server: ${backend}/${server}`);
    return { b, s };
  }

  private healthy(s: SimServer): boolean {
    return !this.dead.has(`${s.addr}:${s.port}`);
  }

  apply(plan: Plan): void {
    for (const op of plan.ops) this.applyOp(op);
    for (const m of ['hosts', 'sni'] as const) {
      if (plan.ops.some((o) => o.kind === 'write-map-file' && o.map === m)) {
        assert.deepEqual(this.files[m], this.maps[m], `map file ${m} written with the runtime content`);
      }
    }
    this.drainStartedAt = plan.drainStartedAt;
  }

  applyOp(op: Op): void {
    switch (op.kind) {
      case 'set-addr': {
        const { s } = this.srv(op.backend, op.server);
        assert.ok(s.maint, `set-addr on ${op.backend}/${op.server} outside maint (503s)`);
        s.addr = op.addr;
        s.port = op.port;
        break;
      }
      case 'set-state': {
        const { s } = this.srv(op.backend, op.server);
        const leavingMaint = s.maint && op.state !== 'maint';
        if (op.state === 'maint') {
          s.maint = true;
          s.drain = false;
          s.up = false;
        } else {
          s.maint = false;
          s.drain = op.state === 'drain';
          // notes §1 pitfall 3: leaving maint makes a server UP at once (health reset to rise)
          if (leavingMaint) s.up = true;
        }
        break;
      }
      case 'set-health': {
        const { s } = this.srv(op.backend, op.server);
        if (!s.maint) s.up = op.health === 'up'; // no effect while in maint (notes §1)
        break;
      }
      case 'set-weight': {
        const { b, s } = this.srv(op.backend, op.server);
        assert.ok(op.weight >= 0 && op.weight <= 256, 'weight range');
        if (b.staticLb) assert.ok(op.weight === 0 || op.weight === 1, 'Backend is using a static LB algorithm');
        s.weight = op.weight;
        break;
      }
      case 'add-server': {
        const b = this.backends.get(op.backend);
        assert.ok(b, `No such backend: ${op.backend}`);
        assert.ok(!b.staticLb, 'Backend must use a dynamic load balancing to support dynamic servers.');
        assert.ok(!b.servers.some((x) => x.name === op.server), 'Already exists a server with the same name in backend.');
        assert.ok(!isSlotName(op.server), 'overflow server named like a slot');
        b.servers.push({
          name: op.server,
          addr: op.addr,
          port: op.port,
          maint: true,
          drain: false,
          up: false,
          weight: op.weight,
          scur: 0,
          qcur: 0,
          checkStatus: '',
          dynamic: true,
          checkEnabled: false,
        });
        break;
      }
      case 'enable-health': {
        const { s } = this.srv(op.backend, op.server);
        s.checkEnabled = true;
        break;
      }
      case 'del-server': {
        const { b, s } = this.srv(op.backend, op.server);
        assert.ok(s.dynamic, 'del-server of a template slot');
        assert.ok(s.maint, 'Only servers in maintenance mode can be deleted.');
        assert.ok(s.scur === 0 && s.qcur === 0, 'Server still has connections attached to it');
        b.servers = b.servers.filter((x) => x !== s);
        break;
      }
      case 'map-add':
        assert.ok(!this.maps[op.map].has(op.key), `add map on existing key ${op.key} (duplicate)`);
        assert.ok(this.backends.has(op.value), `map value ${op.value} is no backend`);
        this.maps[op.map].set(op.key, op.value);
        break;
      case 'map-set':
        assert.ok(this.maps[op.map].has(op.key), 'entry not found.');
        assert.ok(this.backends.has(op.value), `map value ${op.value} is no backend`);
        this.maps[op.map].set(op.key, op.value);
        break;
      case 'map-del':
        assert.ok(this.maps[op.map].has(op.key), 'Key not found.');
        this.maps[op.map].delete(op.key);
        break;
      case 'write-map-file':
        this.files[op.map] = new Map(op.entries);
        break;
    }
    this.checkInvariants(`after ${op.kind} ${'server' in op ? `${op.backend}/${op.server}` : 'backend' in op ? op.backend : op.map}`);
  }

  checkInvariants(where: string): void {
    for (const b of this.backends.values()) {
      for (const s of b.servers) {
        assert.ok(s.maint || !isClearedAddr(s.addr, s.port), `${b.name}/${s.name} serves from a cleared address ${where}`);
      }
    }
  }

  /** Time passes: checks run, sessions come and go. */
  tick(rnd: () => number, ms = 250): void {
    this.now += ms;
    for (const b of this.backends.values()) {
      for (const s of b.servers) {
        if (!s.maint || (s.dynamic && s.checkEnabled)) {
          if (!isClearedAddr(s.addr, s.port)) {
            const ok = this.healthy(s);
            s.checkStatus = ok ? 'L4OK' : 'L4CON';
            if (!s.maint) s.up = ok;
          }
        }
        if (s.scur > 0 && rnd() < 0.35) s.scur--;
        if (s.qcur > 0 && rnd() < 0.5) s.qcur--;
        if (!s.maint && !s.drain && s.up && rnd() < 0.3) s.scur += 1 + Math.floor(rnd() * 3);
      }
    }
  }

  /**
   * Render + reload: template slots 1..capacity keep their state by name (server-state
   * file), dynamic servers are gone, sessions belong to the old worker, maps come from
   * the rendered map files.
   */
  reload(registry: Registry, capacity: ReadonlyMap<string, number>): void {
    const next = new Map<string, SimBackend>();
    for (const svc of [...registry.http.values(), ...registry.tcp.values()]) {
      const name = backendName(svc);
      const n = capacity.get(name);
      assert.ok(n !== undefined && n >= 1, `capacity for ${name}`);
      const old = this.backends.get(name);
      const servers: SimServer[] = [];
      for (let i = 1; i <= n; i++) {
        const prev = old?.servers.find((s) => s.name === `s${i}`);
        servers.push(
          prev
            ? { ...prev, scur: 0, qcur: 0 }
            : {
                name: `s${i}`,
                addr: '0.0.0.0',
                port: 1,
                maint: true,
                drain: false,
                up: false,
                weight: 1,
                scur: 0,
                qcur: 0,
                checkStatus: '',
                dynamic: false,
                checkEnabled: true,
              },
        );
      }
      if (old) {
        // A slot holding a desired upstream must survive the reload (capacity keeps it).
        const wanted = new Set([...svc.upstreams.values()].map((u) => `${u.addr}:${u.port}`));
        for (const s of old.servers) {
          if (s.dynamic) continue;
          const idx = Number(s.name.slice(1));
          if (idx > n) assert.ok(!wanted.has(`${s.addr}:${s.port}`), `reload to ${n} slots cuts off ${name}/${s.name}`);
        }
      }
      next.set(name, { name, servers, hash: structureHash(svc), staticLb: STATIC_LB.has(svc.options.balance) });
    }
    this.backends = next;
    const dm = desiredMaps(registry);
    this.maps = { hosts: new Map(dm.hosts), sni: new Map(dm.sni) };
    this.files = { hosts: new Map(dm.hosts), sni: new Map(dm.sni) };
    this.reloads++;
  }

  /** Every desired upstream on exactly one server, in its state and weight; nothing else holds an address. */
  assertMatches(registry: Registry): void {
    const names = new Set<string>();
    for (const svc of [...registry.http.values(), ...registry.tcp.values()]) {
      const be = backendName(svc);
      names.add(be);
      const b = this.backends.get(be);
      assert.ok(b, `backend ${be} exists`);
      const isStatic = STATIC_LB.has(svc.options.balance);
      const byAddr = new Map<string, Upstream>();
      for (const u of [...svc.upstreams.values()].sort((x, y) => (x.id < y.id ? -1 : 1))) {
        if (!byAddr.has(`${u.addr}:${u.port}`)) byAddr.set(`${u.addr}:${u.port}`, u);
      }
      const holding = b.servers.filter((s) => !isClearedAddr(s.addr, s.port));
      for (const [k, u] of byAddr) {
        const on = holding.filter((s) => `${s.addr}:${s.port}` === k);
        assert.equal(on.length, 1, `${be}: ${k} on exactly one server (${on.map((s) => s.name).join(',')})`);
        const s = on[0]!;
        const want: Record<UpstreamState, [boolean, boolean]> = { ready: [false, false], drain: [false, true], maint: [true, false] };
        assert.deepEqual([s.maint, s.drain], want[u.state], `${be}/${s.name} ${k} state ${u.state}`);
        const w = isStatic && u.weight !== 0 ? 1 : u.weight;
        assert.equal(s.weight, w, `${be}/${s.name} weight`);
      }
      for (const s of holding) assert.ok(byAddr.has(`${s.addr}:${s.port}`), `${be}/${s.name} holds stale ${s.addr}:${s.port}`);
      for (const s of b.servers) {
        if (s.dynamic) assert.ok(byAddr.has(`${s.addr}:${s.port}`), `${be}/${s.name} overflow server left over`);
        else if (isClearedAddr(s.addr, s.port)) assert.ok(s.maint && s.weight === 1, `${be}/${s.name} free slot is maint, weight 1`);
      }
    }
    const dm = desiredMaps(registry);
    assert.deepEqual(this.maps.hosts, dm.hosts, 'hosts map');
    assert.deepEqual(this.maps.sni, dm.sni, 'sni map');
  }
}

// ------------------------------------------------------------------ random registry sequences

interface SvcModel {
  kind: 'http' | 'tcp';
  upstreams: Map<string, Upstream>;
  domains: Set<string>;
  pass: boolean;
  balance: Balance;
  minSlots: number;
}

const HTTP_NAMES = ['a', 'b', 'c', 'd'];
const TCP_NAMES = ['t', 'u'];
const DOMAINS = ['w.example', 'x.example', 'y.example', 'z.example', 'v.example'];

/** A random registry that mutates step by step (seeded through `rnd`). */
export class World {
  services = new Map<string, SvcModel>();
  private seq = 0;
  /** `balanceChanges: false`: never toggle roundrobin/static-rr (the planner sizes weights by the desired balance before the reload that applies it; the simulator refuses that). */
  constructor(
    private rnd: () => number,
    private opts: { balanceChanges?: boolean } = {},
  ) {}

  pick<T>(xs: readonly T[]): T | undefined {
    return xs.length ? xs[Math.floor(this.rnd() * xs.length)] : undefined;
  }

  randomUpstream(id = `u${++this.seq}`): Upstream {
    const r = this.rnd;
    const weight = r() < 0.8 ? 1 : r() < 0.3 ? 0 : 1 + Math.floor(r() * 20);
    const x = r();
    const state: UpstreamState = x < 0.85 ? 'ready' : x < 0.93 ? 'drain' : 'maint';
    return { id, addr: `10.0.${Math.floor(r() * 2)}.${1 + Math.floor(r() * 24)}`, port: r() < 0.7 ? 80 : 8080, weight, state };
  }

  addService(): void {
    const isTcp = this.rnd() < 0.3;
    const name = this.pick((isTcp ? TCP_NAMES : HTTP_NAMES).filter((n) => !this.services.has(n)));
    if (!name) return;
    const m: SvcModel = { kind: isTcp ? 'tcp' : 'http', upstreams: new Map(), domains: new Set(), pass: false, balance: 'roundrobin', minSlots: 4 };
    const n = Math.floor(this.rnd() * 4);
    for (let i = 0; i < n; i++) {
      const u = this.randomUpstream();
      m.upstreams.set(u.id, u);
    }
    if (!isTcp && this.rnd() < 0.7) m.domains.add(this.pick(DOMAINS)!);
    this.services.set(name, m);
  }

  /** Mutates the registry; returns true when the change is membership only (no reload expected). */
  mutate(): boolean {
    const r = this.rnd();
    const names = [...this.services.keys()];
    const svc = () => this.services.get(this.pick(names) ?? '');
    if (names.length === 0 || r < 0.04 || (names.length < 3 && this.rnd() < 0.1)) {
      this.addService();
      return false;
    }
    if (r < 0.07) {
      this.services.delete(this.pick(names)!);
      return false;
    }
    if (r < 0.09) {
      const s = [...this.services.values()].filter((x) => x.kind === 'http');
      const m = this.pick(s);
      if (m) m.pass = !m.pass;
      return false;
    }
    if (r < 0.11) {
      if (this.opts.balanceChanges === false) return false;
      const m = svc()!;
      m.balance = m.balance === 'roundrobin' ? 'static-rr' : 'roundrobin';
      return false;
    }
    if (r < 0.12) {
      svc()!.minSlots = this.pick([1, 2, 4])!;
      return false;
    }
    const m = svc()!;
    const ids = [...m.upstreams.keys()];
    if (r < 0.45) {
      const u = this.randomUpstream();
      m.upstreams.set(u.id, u);
    } else if (r < 0.6) {
      const id = this.pick(ids);
      if (id) m.upstreams.delete(id);
    } else if (r < 0.7) {
      const id = this.pick(ids);
      if (id) {
        const n = this.randomUpstream(id);
        const old = m.upstreams.get(id)!;
        m.upstreams.set(id, { ...old, addr: n.addr, port: n.port });
      }
    } else if (r < 0.8) {
      const id = this.pick(ids);
      if (id) {
        const n = this.randomUpstream(id);
        m.upstreams.set(id, { ...m.upstreams.get(id)!, weight: n.weight, state: n.state });
      }
    } else if (r < 0.86) {
      // scale out: more than the slots hold
      for (let i = 0; i < 5; i++) {
        const u = this.randomUpstream();
        m.upstreams.set(u.id, u);
      }
    } else if (r < 0.9) {
      for (const id of ids) if (this.rnd() < 0.6) m.upstreams.delete(id);
    } else {
      const target = this.pick([...this.services.entries()].filter(([, x]) => x.kind === 'http'));
      const d = this.pick(DOMAINS)!;
      if (this.rnd() < 0.3) for (const x of this.services.values()) x.domains.delete(d);
      else if (target) target[1].domains.add(d);
    }
    // membership only, unless the backend is static (capacity shortfall is then urgent)
    return m.balance === 'roundrobin';
  }

  registry(): Registry {
    const list: Service[] = [];
    for (const [name, m] of this.services) {
      const options = { balance: m.balance, minSlots: m.minSlots };
      list.push(
        m.kind === 'tcp'
          ? tcp(name, [...m.upstreams.values()], [9000], options)
          : http(name, [...m.upstreams.values()], { domains: [...m.domains], sslPassthrough: m.pass, options }),
      );
    }
    return reg(...list);
  }
}
