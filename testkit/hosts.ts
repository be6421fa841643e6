/**
 * Test hosts on one machine: each host is a network namespace with one veth (`eth0`) into a
 * bridge that lives in a namespace of its own, on 10.200.213.0/24. Those addresses exist only
 * inside the namespaces (no route, no interface in the root namespace), so no traffic leaves.
 *
 * On top: a 3-member etcd cluster, load-balancer hosts (HAProxy + `haproxy-updater run`),
 * upstream hosts (small HTTP servers, optionally `haproxy-updater register`) and a client
 * host that runs bounded load (hosts-agent.ts). Processes run as `ip netns exec <ns> <cmd>`
 * (spawned with argument arrays; `ip netns exec` execs the command, so the PID is the
 * command's own) and are stopped by PID. `destroy()` stops every process started in the
 * namespaces and deletes them; namespaces named after a PID that no longer runs are swept
 * first, so a crashed run leaves nothing behind for long.
 *
 * Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN): `hostsSkipReason()` says why not otherwise.
 * ETCD_BIN / ETCDCTL_BIN / HAPROXY_BIN select binaries (default: PATH).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execFileP, startProcess, stopProcess, tempDir, removeDir, waitFor, socketCommand, type Proc, BIN, pidAlive, etcdBin, etcdctlBin, haproxyBin } from './index.js';

// testkit/bins.ts owns the lookup (env, then PATH with /usr/sbin).
export const ETCD_BIN = etcdBin();
export const ETCDCTL_BIN = etcdctlBin();
export const HAPROXY_BIN = haproxyBin();

const AGENT = fileURLToPath(new URL('./hosts-agent.ts', import.meta.url));
const SUBNET = '10.200.213';
/** Namespace names: `hu-c<pid>-<host>`; the PID tells the sweep whether the owner still runs. */
const NS_PREFIX = 'hu-c';

/** Why the host tests cannot run here, or null. */
export function hostsSkipReason(): string | null {
  if (process.platform !== 'linux') return 'test hosts need Linux network namespaces';
  if (process.getuid?.() !== 0) return 'test hosts need root (ip netns, veth, iptables); run as root to include them';
  const ip = spawnSync('ip', ['netns', 'list'], { stdio: 'ignore' });
  if (ip.error || ip.status !== 0) return 'test hosts need iproute2 (`ip netns`)';
  return null;
}

const ip = (...args: string[]) => execFileP('ip', args);


async function killNamespacePids(ns: string): Promise<void> {
  const { stdout } = await ip('netns', 'pids', ns).catch(() => ({ stdout: '' }));
  for (const pid of stdout.split('\n').map(Number).filter((n) => n > 0)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}

/** Deletes namespaces left by test runs whose process is gone (killed before its cleanup ran). */
export async function sweepStaleNamespaces(): Promise<string[]> {
  const { stdout } = await ip('netns', 'list');
  const swept: string[] = [];
  for (const line of stdout.split('\n')) {
    const name = line.split(' ')[0] ?? '';
    const m = new RegExp(`^${NS_PREFIX}(\\d+)-`).exec(name);
    if (!m || pidAlive(Number(m[1]))) continue;
    await killNamespacePids(name);
    await ip('netns', 'del', name).catch(() => undefined);
    swept.push(name);
  }
  return swept;
}

export interface Host {
  readonly name: string;
  readonly ns: string;
  /** Its address on the test network. */
  readonly ip: string;
  /** Starts `cmd args` inside the host (tracked; stopped by PID in destroy()). */
  spawn(cmd: string, args: string[], env?: NodeJS.ProcessEnv): Proc;
  /** Runs a command inside the host and returns stdout. */
  exec(cmd: string, args: string[], opts?: { timeoutMs?: number; env?: NodeJS.ProcessEnv }): Promise<string>;
  /** GET from inside the host (curl); status 0 when nothing answered. */
  httpGet(url: string, timeoutSec?: number): Promise<{ status: number; body: string }>;
  /** Runs iptables inside the host's namespace. */
  iptables(...args: string[]): Promise<void>;
  /** Takes its interface down / up (the host is cut off from every other host). */
  linkDown(): Promise<void>;
  linkUp(): Promise<void>;
}

export class TestNet {
  readonly id = `${NS_PREFIX}${process.pid}-${Math.random().toString(36).slice(2, 6)}`;
  readonly hosts = new Map<string, Host>();
  readonly #bridgeNs = `${this.id}-br`;
  readonly #procs = new Set<Proc>();
  readonly #namespaces: string[] = [];
  #exitHook = () => {
    // Last resort when the test process exits without destroy(): synchronous on purpose.
    for (const ns of this.#namespaces) spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
  };

  static async create(): Promise<TestNet> {
    await sweepStaleNamespaces();
    const net = new TestNet();
    process.once('exit', net.#exitHook);
    await net.#addNs(net.#bridgeNs);
    await ip('-n', net.#bridgeNs, 'link', 'add', 'br0', 'type', 'bridge');
    await ip('-n', net.#bridgeNs, 'link', 'set', 'br0', 'up');
    return net;
  }

  async #addNs(ns: string): Promise<void> {
    await ip('netns', 'add', ns);
    this.#namespaces.push(ns);
    await ip('-n', ns, 'link', 'set', 'lo', 'up');
  }

  /** Adds a host `name` (at most 10 characters) at 10.200.213.<octet>. */
  async addHost(name: string, octet: number): Promise<Host> {
    if (!/^[a-z0-9]{1,10}$/.test(name) || this.hosts.has(name)) throw new Error(`bad or duplicate host name ${name}`);
    if (!Number.isInteger(octet) || octet < 2 || octet > 254) throw new Error(`bad host octet ${octet}`);
    const ns = `${this.id}-${name}`;
    const addr = `${SUBNET}.${octet}`;
    const peer = `v-${name}`;
    await this.#addNs(ns);
    await ip('-n', ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', peer, 'netns', this.#bridgeNs);
    await ip('-n', this.#bridgeNs, 'link', 'set', peer, 'master', 'br0');
    await ip('-n', this.#bridgeNs, 'link', 'set', peer, 'up');
    await ip('-n', ns, 'addr', 'add', `${addr}/24`, 'dev', 'eth0');
    await ip('-n', ns, 'link', 'set', 'eth0', 'up');
    const procs = this.#procs;
    const host: Host = {
      name,
      ns,
      ip: addr,
      spawn(cmd, args, env) {
        const p = startProcess('ip', ['netns', 'exec', ns, cmd, ...args], env ? { env: { ...process.env, ...env } } : {});
        procs.add(p);
        p.child.once('exit', () => procs.delete(p));
        return p;
      },
      async exec(cmd, args, opts = {}) {
        const { stdout } = await execFileP('ip', ['netns', 'exec', ns, cmd, ...args], {
          timeout: opts.timeoutMs ?? 10_000,
          env: { ...process.env, ...opts.env },
        });
        return stdout;
      },
      async httpGet(url, timeoutSec = 3) {
        try {
          const out = await host.exec('curl', ['-s', '--max-time', String(timeoutSec), '-w', '\n%{http_code}', url], { timeoutMs: (timeoutSec + 2) * 1000 });
          const i = out.lastIndexOf('\n');
          return { status: Number(out.slice(i + 1)) || 0, body: out.slice(0, i) };
        } catch {
          return { status: 0, body: '' };
        }
      },
      async iptables(...args) {
        await execFileP('ip', ['netns', 'exec', ns, 'iptables', '-w', ...args]);
      },
      linkDown: async () => void (await ip('-n', ns, 'link', 'set', 'eth0', 'down')),
      linkUp: async () => void (await ip('-n', ns, 'link', 'set', 'eth0', 'up')),
    };
    this.hosts.set(name, host);
    return host;
  }

  /** Stops every process started in the hosts (by PID), then deletes the namespaces. */
  async destroy(): Promise<void> {
    await Promise.all([...this.#procs].map((p) => stopProcess(p, 2000)));
    // Processes the ones above started (HAProxy under a SIGKILLed updater): by PID, per namespace.
    for (const ns of this.#namespaces) await killNamespacePids(ns);
    for (const ns of [...this.#namespaces].reverse()) await ip('netns', 'del', ns).catch(() => undefined);
    this.#namespaces.length = 0;
    process.removeListener('exit', this.#exitHook);
  }
}

/** SIGKILL (no SIGTERM first) and wait for the exit. */
export async function killProcess(p: Proc): Promise<void> {
  if (p.child.exitCode !== null || p.child.signalCode !== null) return;
  const exited = new Promise<void>((r) => p.child.once('exit', () => r()));
  p.child.kill('SIGKILL');
  await exited;
}

// ---------------------------------------------------------------------------- etcd cluster

export interface EtcdMember {
  readonly name: string;
  readonly host: Host;
  readonly endpoint: string;
  proc: Proc | null;
}

export interface EtcdCluster {
  readonly members: EtcdMember[];
  /** Client URLs of all members, comma separated (the updater's --etcd). */
  readonly endpoints: string[];
  /** etcdctl against all members (run on the ctl host). */
  ctl(...args: string[]): Promise<string>;
  /** The current leader's member, asked of the live members. */
  leader(): Promise<EtcdMember>;
  kill(m: EtcdMember): Promise<void>;
  start(m: EtcdMember): Promise<void>;
  destroy(): Promise<void>;
}

/**
 * Three (or `n`) members, one per host, on the hosts' addresses (client 2379, peer 2380),
 * heartbeat 100 ms / election 1000 ms (etcd's defaults). `ctlHost` runs etcdctl.
 */
export async function startEtcdCluster(net: TestNet, hosts: Host[], ctlHost: Host): Promise<EtcdCluster> {
  const dir = await tempDir('hu-cluster-etcd-');
  const token = `${net.id}-etcd`;
  const initial = hosts.map((h) => `${h.name}=http://${h.ip}:2380`).join(',');
  const members: EtcdMember[] = hosts.map((h) => ({ name: h.name, host: h, endpoint: `http://${h.ip}:2379`, proc: null }));
  const endpoints = members.map((m) => m.endpoint);
  const launch = async (m: EtcdMember, state: 'new' | 'existing') => {
    await mkdir(path.join(dir, m.name), { recursive: true });
    m.proc = m.host.spawn(ETCD_BIN, [
      '--name', m.name,
      '--data-dir', path.join(dir, m.name, 'data'),
      '--listen-client-urls', m.endpoint,
      '--advertise-client-urls', m.endpoint,
      '--listen-peer-urls', `http://${m.host.ip}:2380`,
      '--initial-advertise-peer-urls', `http://${m.host.ip}:2380`,
      '--initial-cluster', initial,
      '--initial-cluster-state', state,
      '--initial-cluster-token', token,
      '--heartbeat-interval', '100',
      '--election-timeout', '1000',
      '--log-level', 'error',
      '--logger', 'zap',
    ], { ETCD_UNSUPPORTED_ARCH: process.arch === 'x64' ? '' : process.arch });
  };
  const ctlAt = (eps: string[], ...args: string[]) =>
    ctlHost.exec(ETCDCTL_BIN, ['--endpoints', eps.join(','), '--dial-timeout', '1s', '--command-timeout', '2s', ...args], { env: { ETCDCTL_API: '3' } });
  const cluster: EtcdCluster = {
    members,
    endpoints,
    ctl: (...args) => ctlAt(endpoints, ...args),
    async leader() {
      return waitFor<EtcdMember | null>(
        async () => {
          for (const m of members) {
            if (!m.proc || m.proc.child.exitCode !== null || m.proc.child.signalCode !== null) continue;
            const out = await ctlAt([m.endpoint], 'endpoint', 'status', '-w', 'json').catch(() => '');
            // Member ids are uint64: compared as digit strings, JSON.parse would round them.
            const self = /"member_id":(\d+)/.exec(out)?.[1];
            const leader = /"leader":(\d+)/.exec(out)?.[1];
            if (self && leader && self === leader) return m;
          }
          return null;
        },
        { timeoutMs: 15_000, intervalMs: 200, what: 'an etcd leader' },
      ) as Promise<EtcdMember>;
    },
    async kill(m) {
      if (!m.proc) return;
      // SIGKILL only: on SIGTERM etcd hands its leadership over first, which is no crash.
      await killProcess(m.proc);
      m.proc = null;
    },
    async start(m) {
      await launch(m, 'existing');
      await waitFor(async () => (await ctlAt([m.endpoint], 'endpoint', 'health').then(() => true)), { timeoutMs: 20_000, intervalMs: 200, what: `etcd ${m.name} healthy` });
    },
    async destroy() {
      await Promise.all(members.map((m) => cluster.kill(m)));
      await removeDir(dir);
    },
  };
  for (const m of members) await launch(m, 'new');
  await waitFor(async () => (await cluster.ctl('endpoint', 'health').then(() => true)), { timeoutMs: 30_000, intervalMs: 200, what: 'etcd cluster healthy' }).catch(
    (err: unknown) => {
      const out = members.map((m) => `${m.name}: ${m.proc?.output.slice(-5).join('\n')}`).join('\n');
      throw new Error(`${(err as Error).message}\n${out}`);
    },
  );
  return cluster;
}

// ---------------------------------------------------------------------------- LB hosts

export interface LbInstance {
  readonly host: Host;
  readonly stateDir: string;
  readonly adminSocket: string;
  readonly masterSocket: string;
  readonly args: string[];
  proc: Proc;
  /** /readyz, /metrics … of its updater (127.0.0.1:9180 inside the host). */
  get(pathname: string): Promise<{ status: number; body: string }>;
  /** One gauge/counter value from /metrics (first sample matching name and label text). */
  metric(name: string, labels?: string): Promise<number | null>;
  /** SIGKILL the updater (HAProxy keeps serving; the next updater adopts it). */
  killUpdater(): Promise<void>;
  /** Start the updater again (same flags, same state dir) and wait for /readyz. */
  startUpdater(): Promise<void>;
}

export interface LbOptions {
  /** etcd endpoints in the order this instance tries them. */
  etcd: string[];
  extraArgs?: string[];
}

/** HAProxy + `haproxy-updater run` (managed) on `host`: HTTP on :80 of its address. */
export async function startLb(host: Host, o: LbOptions): Promise<LbInstance> {
  const stateDir = await tempDir(`hu-${host.name}-`);
  const args = [
    '--import', 'tsx', BIN, 'run',
    '--etcd', o.etcd.join(','),
    '--state-dir', stateDir,
    '--haproxy', 'managed',
    '--haproxy-bin', HAPROXY_BIN,
    '--bind-address', host.ip,
    '--http-port', '80',
    '--https-port', '0',
    '--listen', '127.0.0.1:9180',
    '--verify-interval', '1s',
    '--drain-timeout', '2s',
    '--log-level', process.env.UPDATER_LOG_LEVEL ?? 'warn',
    ...(o.extraArgs ?? []),
  ];
  const get = (pathname: string) => host.httpGet(`http://127.0.0.1:9180${pathname}`);
  const lb: LbInstance = {
    host,
    stateDir,
    adminSocket: path.join(stateDir, 'admin.sock'),
    masterSocket: path.join(stateDir, 'master.sock'),
    args,
    proc: null as unknown as Proc,
    get,
    async metric(name, labels = '') {
      const { body } = await get('/metrics');
      for (const line of body.split('\n')) {
        if (!line.startsWith(name) || line[name.length] === '_') continue;
        if (labels && !line.includes(labels)) continue;
        return Number(line.slice(line.lastIndexOf(' ') + 1));
      }
      return null;
    },
    async killUpdater() {
      // SIGKILL only: SIGTERM is a clean stop, which stops the managed HAProxy too.
      await killProcess(lb.proc);
    },
    async startUpdater() {
      lb.proc = host.spawn(process.execPath, args);
      const exited = () => lb.proc.child.exitCode !== null || lb.proc.child.signalCode !== null;
      await waitFor(async () => exited() || (await get('/readyz')).status === 200, { timeoutMs: 30_000, intervalMs: 200, what: `updater on ${host.name} ready` }).catch(
        (err: unknown) => {
          throw new Error(`${(err as Error).message}\n${lb.proc.output.slice(-30).join('\n')}`);
        },
      );
      if (exited()) throw new Error(`updater on ${host.name} exited: ${lb.proc.output.slice(-20).join('\n')}`);
    },
  };
  await lb.startUpdater();
  return lb;
}

/**
 * The servers HAProxy routes to, from `show servers state`: `backend addr:port` lines
 * (sorted) of servers running (op 2; or any, with `includeDown`) and in neither maint nor drain. Slot names and
 * numbering are left out: they may differ between instances.
 */
export async function serverView(lb: LbInstance, o: { includeDown?: boolean } = {}): Promise<string[]> {
  const text = await socketCommand(lb.adminSocket, 'show servers state');
  const out: string[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#') || /^\d+$/.test(line.trim())) continue;
    // be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state ... srv_port (field 18)
    const f = line.split(' ');
    const [, backend, , , addr, op, admin] = f;
    const port = f[18];
    // Any maint or drain flag (free slots are in maint) except CMAINT (0x04), which only
    // records that a slot was declared `disabled` in the config.
    if (!backend || !addr || (op !== '2' && !o.includeDown) || (Number(admin) & ~0x04) !== 0) continue;
    out.push(`${backend} ${addr}:${port}`);
  }
  return out.sort();
}

// ---------------------------------------------------------------------------- agents

/** Small HTTP upstreams answering `<ip>:<port>\n` on each of `ports` of the host's address (one process, hosts-agent.ts). */
export function startUpstreams(host: Host, ports: number[]): Proc {
  return host.spawn(process.execPath, ['--import', 'tsx', AGENT, 'upstream', JSON.stringify({ host: host.ip, ports })]);
}

export async function waitUpstream(host: Host, port: number): Promise<void> {
  await waitFor(async () => (await host.httpGet(`http://${host.ip}:${port}/health`, 1)).status === 200, { timeoutMs: 15_000, intervalMs: 100, what: `upstream ${host.ip}:${port}` });
}

export interface LoadTarget {
  url: string;
  host: string;
}

export interface LoadRun {
  /** Stops the load and returns one result per target (same order). */
  stop(): Promise<{ ok: number; failed: number; failures: Record<string, number> }[]>;
}

/** Bounded closed-loop load from `client` through every target at once (hosts-agent.ts). */
export function startLoad(client: Host, targets: LoadTarget[], o: { concurrency?: number; durationMs?: number; maxRequests?: number } = {}): LoadRun {
  const opts = { targets, concurrency: o.concurrency ?? 2, durationMs: o.durationMs ?? 60_000, maxRequests: o.maxRequests ?? 100_000 };
  const proc = client.spawn(process.execPath, ['--import', 'tsx', AGENT, 'load', JSON.stringify(opts)]);
  // startProcess gives the child no stdin: the agent stops on SIGUSR2 and prints its results.
  return {
    async stop() {
      const exited = new Promise<void>((r) => (proc.child.exitCode !== null ? r() : proc.child.once('exit', () => r())));
      proc.child.kill('SIGUSR2');
      await exited;
      const line = [...proc.output].reverse().find((l) => l.startsWith('{"results"'));
      if (!line) throw new Error(`load agent printed no result: ${proc.output.slice(-10).join('\n')}`);
      return (JSON.parse(line) as { results: { ok: number; failed: number; failures: Record<string, number> }[] }).results;
    },
  };
}

/**
 * Waits until every instance in `lbs` routes exactly `want` (`addr:port`s, each once) in
 * `backend`; returns when each got there, in ms after `since` (Date.now() clock).
 * `includeDown`: servers HAProxy has but finds down count too. Polls every 10 ms.
 */
export async function routedAt(
  lbs: LbInstance[],
  backend: string,
  want: string[],
  since: number,
  o: { timeoutMs?: number; includeDown?: boolean; signal?: AbortSignal } = {},
): Promise<number[]> {
  const expected = [...want].sort();
  const ofBackend = (view: string[]) => view.filter((l) => l.startsWith(`${backend} `)).map((l) => l.slice(backend.length + 1));
  const same = (a: string[]) => a.length === expected.length && a.every((x, i) => x === expected[i]);
  const at: (number | null)[] = lbs.map(() => null);
  await waitFor(
    async () => {
      const views = await Promise.all(lbs.map((lb) => serverView(lb, { includeDown: o.includeDown })));
      const now = Date.now();
      views.forEach((v, i) => {
        if (at[i] === null && same(ofBackend(v))) at[i] = now - since;
      });
      return at.every((t) => t !== null);
    },
    { timeoutMs: o.timeoutMs ?? 10_000, intervalMs: 10, what: `every instance routing ${expected.join(' ')}`, signal: o.signal },
  ).catch(async (err: unknown) => {
    if (o.signal?.aborted) throw err;
    const now = await Promise.all(lbs.map(async (lb) => ofBackend(await serverView(lb))));
    throw new Error(`${(err as Error).message}; routed now: ${JSON.stringify(now)}`);
  });
  return at as number[];
}
