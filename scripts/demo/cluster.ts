/**
 * `npm run demo -- --cluster`: the demo's story on two load balancers (HAProxy + updater
 * each) and a 3-member etcd cluster, on test hosts made of network namespaces
 * (testkit/hosts.ts; needs root). Traffic runs from a client host through both load
 * balancers; every change is timed on both (first and last instance to route it); in the
 * last step the etcd leader is SIGKILLed on screen and a change made during the failover
 * reaches both. Upstreams are written with etcdctl (the single-host demo shows `register`).
 * Ctrl-C stops the traffic and every process by PID, deletes the namespaces, exits 130.
 * The last line is machine-readable (`DEMO-SUMMARY {json}`).
 */
import { spawnSync } from 'node:child_process';
import { masterView, percentile, pidAlive, sleep, waitFor } from '../../testkit/index.js';
import {
  TestNet,
  hostsSkipReason,
  routedAt,
  startEtcdCluster,
  startLb,
  startLoad,
  startUpstreams,
  waitUpstream,
  type EtcdCluster,
  type Host,
  type LbInstance,
  type LoadRun,
} from '../../testkit/hosts.js';
import type { Options } from './options.js';
import { C, caption, print, say } from './screen.js';

const P = '/haproxy-discover';
const STEPS = 6;

interface Change {
  what: string;
  /** ms after the etcd write: first and last load balancer routing it. */
  first: number;
  last: number;
}

export class ClusterDemo {
  readonly #abort = new AbortController();
  abortedBy: string | null = null;
  net: TestNet | null = null;
  etcd: EtcdCluster | null = null;
  readonly lbs: LbInstance[] = [];
  load: LoadRun | null = null;
  loadResults: { ok: number; failed: number; failures: Record<string, number> }[] = [];
  readonly changes: Change[] = [];
  readonly pids: number[] = [];
  step = 0;
  membershipReloads = 0;
  structuralReloads = 0;
  failoverMs: number | null = null;
  #phase: 'membership' | 'structural' = 'membership';
  #reloadBase: number[] = [];

  constructor(readonly o: Options) {}

  get signal(): AbortSignal {
    return this.#abort.signal;
  }

  abort(sig: string): void {
    if (this.abortedBy) return;
    this.abortedBy = sig;
    this.#abort.abort(new Error(`aborted by ${sig}`));
  }

  /** Reloads since the last call (HAProxy master CLI of each instance), counted for the current phase. */
  async #countReloads(): Promise<void> {
    const now = await Promise.all(this.lbs.map(async (lb) => (await masterView(lb.masterSocket)).reloads));
    const n = now.reduce((a, v, i) => a + v - (this.#reloadBase[i] ?? v), 0);
    if (this.#phase === 'membership') this.membershipReloads += n;
    else this.structuralReloads += n;
    this.#reloadBase = now;
  }

  async #setStep(step: number, title: string, phase: 'membership' | 'structural', note: string): Promise<void> {
    this.signal.throwIfAborted();
    await this.#countReloads();
    this.step = step;
    this.#phase = phase;
    caption(step, title, note);
  }

  async #ctl(...args: string[]): Promise<void> {
    this.signal.throwIfAborted();
    await this.etcd!.ctl(...args);
  }

  /** Waits until both instances route `want` in `backend`; records and prints the times. */
  async #routed(what: string, backend: string, want: string[], since: number): Promise<void> {
    const at = await routedAt(this.lbs, backend, want, since, { timeoutMs: 20_000, signal: this.signal });
    const c = { what, first: Math.min(...at), last: Math.max(...at) };
    this.changes.push(c);
    say(`${what}: routed on ${this.lbs.map((lb, i) => `${lb.host.name} ${C.b(`${at[i]} ms`)}`).join(', ')} (spread ${c.last - c.first} ms)`);
  }

  async #play(): Promise<void> {
    const o = this.o;
    const u = o.short ? 600 : 2500;
    say(C.b('haproxy-updater demo --cluster') + C.dim(' (2 load balancers, 3-member etcd, network namespaces; Ctrl-C ends early)'));
    const net = (this.net = await TestNet.create());
    const e = [await net.addHost('etcd1', 11), await net.addHost('etcd2', 12), await net.addHost('etcd3', 13)];
    const lbHosts = [await net.addHost('lb1', 21), await net.addHost('lb2', 22)];
    const up: Host = await net.addHost('apps', 31);
    const client = await net.addHost('client', 41);
    this.signal.throwIfAborted();
    const etcd = (this.etcd = await startEtcdCluster(net, e, client));
    for (const m of etcd.members) if (m.proc) this.pids.push(m.proc.child.pid!);
    say(`etcd cluster: ${etcd.members.map((m) => `${m.name} ${m.endpoint} (pid ${m.proc?.child.pid})`).join(', ')}`);
    const ports = [8001, 8002, 8003, 8004, 8005, 8006, 8011, 8012];
    this.pids.push(startUpstreams(up, ports).child.pid!);
    await waitUpstream(up, 8012);
    const addr = (p: number) => `${up.ip}:${p}`;
    const key = (svc: string, id: string) => `${P}/http-services/${svc}/upstreams/${id}`;
    await this.#ctl('put', `${P}/http-services/shop/domain`, 'shop.localhost');
    await this.#ctl('put', key('shop', 'shop-1'), addr(8001));
    await this.#ctl('put', key('shop', 'shop-2'), addr(8002));
    const eps = etcd.endpoints;
    for (const [i, h] of lbHosts.entries()) {
      this.signal.throwIfAborted();
      // Each lists a different member first: their watches spread over the cluster.
      const lb = await startLb(h, { etcd: [...eps.slice(i), ...eps.slice(0, i)] });
      this.lbs.push(lb);
      this.pids.push(lb.proc.child.pid!);
      say(`${h.name} ${h.ip}: HAProxy + updater (pid ${lb.proc.child.pid}), etcd endpoints ${[...eps.slice(i), ...eps.slice(0, i)].join(',')}`);
    }
    let shop = [addr(8001), addr(8002)];
    await routedAt(this.lbs, 'http-shop', shop, Date.now(), { timeoutMs: 20_000, signal: this.signal });
    await this.#countReloads();
    const durationMs = (o.durationS + 120) * 1000;
    this.load = startLoad(client, this.lbs.map((lb) => ({ url: `http://${lb.host.ip}/`, host: 'shop.localhost' })), { concurrency: 2, durationMs, maxRequests: 400 * (o.durationS + 120) });
    say(`traffic: client ${client.ip} → shop.localhost through ${this.lbs.map((lb) => lb.host.ip).join(' and ')}`);

    await this.#setStep(1, 'service shop at shop.localhost, 2 instances, on both load balancers', 'membership', 'both updaters watch the same keys through different etcd members');
    await sleep(2 * u, this.signal);

    await this.#setStep(2, 'scale shop 2 → 5 → 2', 'membership', 'each change reaches both HAProxy instances over the Runtime API, no reload');
    for (const n of [3, 4, 5]) {
      const t0 = Date.now();
      await this.#ctl('put', key('shop', `shop-${n}`), addr(8000 + n));
      shop = [...shop, addr(8000 + n)];
      await this.#routed(`scale up: shop-${n}`, 'http-shop', shop, t0);
    }
    await sleep(u, this.signal);
    for (const n of [5, 4, 3]) {
      const t0 = Date.now();
      await this.#ctl('del', key('shop', `shop-${n}`));
      shop = shop.filter((a) => a !== addr(8000 + n));
      await this.#routed(`scale down: shop-${n}`, 'http-shop', shop, t0);
    }

    await this.#setStep(3, 'drain shop-2, then remove it', 'membership', 'state "drain": no new requests on either load balancer, in-flight ones finish');
    let t0 = Date.now();
    await this.#ctl('put', key('shop', 'shop-2'), JSON.stringify({ addr: addr(8002), state: 'drain' }));
    shop = shop.filter((a) => a !== addr(8002));
    await this.#routed('drain shop-2', 'http-shop', shop, t0);
    await sleep(u, this.signal);
    t0 = Date.now();
    await this.#ctl('del', key('shop', 'shop-2'));
    await this.#ctl('put', key('shop', 'shop-6'), addr(8006));
    shop = [...shop, addr(8006)];
    await this.#routed('shop-2 removed, replacement shop-6', 'http-shop', shop, t0);

    await this.#setStep(4, 'new domain store.localhost for shop', 'membership', 'hosts map updated over the Runtime API on both: no reload');
    t0 = Date.now();
    await this.#ctl('put', `${P}/http-services/shop/domain`, 'shop.localhost,store.localhost');
    const at = await Promise.all(
      this.lbs.map((lb) =>
        waitFor(async () => (await client.exec('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '2', '-H', 'Host: store.localhost', `http://${lb.host.ip}/`]).catch(() => '')) === '200', {
          timeoutMs: 20_000,
          intervalMs: 20,
          what: `store.localhost on ${lb.host.name}`,
          signal: this.signal,
        }).then(() => Date.now() - t0),
      ),
    );
    this.changes.push({ what: 'new domain store.localhost', first: Math.min(...at), last: Math.max(...at) });
    say(`store.localhost answered through ${this.lbs.map((lb, i) => `${lb.host.name} after ${C.b(`${at[i]} ms`)}`).join(', ')}`);

    await this.#setStep(5, 'new service api at api.localhost', 'structural', 'a new backend is STRUCTURAL: each instance renders, validates and reloads once (expected)');
    t0 = Date.now();
    await this.#ctl('put', `${P}/http-services/api/domain`, 'api.localhost');
    await this.#ctl('put', key('api', 'api-1'), addr(8011));
    await this.#routed('new service api (reload)', 'http-api', [addr(8011)], t0);
    await sleep(Math.max(1500, u), this.signal);

    await this.#setStep(6, 'the etcd leader killed', 'membership', 'watchers on it move to another member; a change made during the election reaches both');
    const leader = await etcd.leader();
    t0 = Date.now();
    const pid = leader.proc?.child.pid;
    await etcd.kill(leader);
    say(C.y(`etcd leader ${leader.name} (pid ${pid}) killed with SIGKILL`));
    await waitFor(async () => etcd.ctl('put', key('api', 'api-2'), addr(8012)).then(() => true, () => false), { timeoutMs: 20_000, intervalMs: 50, what: 'etcd accepting writes again', signal: this.signal });
    say(`etcd accepted the write of api-2 ${Date.now() - t0} ms after the kill (new leader elected)`);
    await this.#routed('api-2 written during the failover', 'http-api', [addr(8011), addr(8012)], t0);
    this.failoverMs = this.changes.at(-1)!.last;
    await etcd.start(leader);
    if (leader.proc) this.pids.push(leader.proc.child.pid!);
    say(`etcd ${leader.name} restarted (pid ${leader.proc?.child.pid}), rejoined the cluster`);
    await sleep(u, this.signal);
    await this.#countReloads();
  }

  /** Stops the traffic, every process by PID and the namespaces. */
  async #cleanup(): Promise<void> {
    if (this.load) this.loadResults = await this.load.stop().catch(() => []);
    this.load = null;
    await this.etcd?.destroy().catch(() => undefined);
    await this.net?.destroy().catch(() => undefined);
  }

  async run(): Promise<number> {
    const skip = hostsSkipReason();
    if (skip) {
      process.stderr.write(`demo --cluster: ${skip}\n`);
      return 2;
    }
    const aborted = new Promise<void>((r) => this.signal.addEventListener('abort', () => r(), { once: true }));
    let error: unknown = null;
    const played = this.#play().catch((err: unknown) => {
      if (!this.abortedBy) error = err;
    });
    await Promise.race([played, aborted]);
    if (this.abortedBy) say(C.y(`${this.abortedBy}: aborted; stopping the traffic and every process, deleting the namespaces`));
    else if (error) say(C.r(`demo failed: ${(error as Error).stack ?? String(error)}`));
    await this.#cleanup();
    return this.#summary(error);
  }

  #summary(error: unknown): number {
    const ok = this.loadResults.reduce((a, r) => a + r.ok, 0);
    const failed = this.loadResults.reduce((a, r) => a + r.failed, 0);
    const spreads = this.changes.map((c) => c.last - c.first);
    const firsts = this.changes.map((c) => c.first);
    const prefix = this.net?.id ?? null;
    const netns = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout ?? '';
    const leftoverNs = prefix ? netns.split('\n').map((l) => l.split(' ')[0]!).filter((n) => n.startsWith(prefix)) : [];
    const leftover = this.pids.filter((p) => pidAlive(p));
    const pass = !this.abortedBy && !error && failed === 0 && ok > 0 && this.membershipReloads === 0 && leftover.length === 0 && leftoverNs.length === 0;
    print([
      '',
      C.b('== haproxy-updater demo --cluster: summary =='),
      `story             ${this.step}/${STEPS} steps${this.abortedBy ? C.y(` (aborted by ${this.abortedBy})`) : ''}${error ? C.r(` (failed: ${(error as Error).message})`) : ''}`,
      `requests          ok ${ok}, failed ${failed ? C.r(String(failed)) : C.g('0')}   (${this.loadResults.map((r, i) => `${this.lbs[i]?.host.name ?? i} ${r.ok}/${r.failed}`).join(', ')})`,
      `reloads           during membership changes: ${this.membershipReloads ? C.r(String(this.membershipReloads)) : C.g('0')}   structural: ${this.structuralReloads}   (both masters' counters)`,
      `per change        first instance p50 ${Math.round(percentile(firsts, 50))} ms; spread (last - first) p50 ${Math.round(percentile(spreads, 50))} ms, max ${spreads.length ? Math.max(...spreads) : 0} ms over ${spreads.length} changes`,
      `leader failover   ${this.failoverMs === null ? '-' : `${this.failoverMs} ms from the kill to the change routed on both`}`,
      `processes         ${leftover.length ? C.r(`left running: ${leftover.join(',')}`) : 'all stopped'}; namespaces ${leftoverNs.length ? C.r(`left: ${leftoverNs.join(',')}`) : 'deleted'}`,
      `result            ${this.abortedBy ? C.y('ABORTED') : pass ? C.g('PASS') : C.r('FAIL')}`,
    ]);
    const json = {
      cluster: true,
      ok,
      failed,
      failures: this.loadResults.map((r) => r.failures),
      membershipReloads: this.membershipReloads,
      structuralReloads: this.structuralReloads,
      changes: this.changes,
      failoverMs: this.failoverMs,
      steps: this.step,
      aborted: this.abortedBy !== null,
      error: error ? String((error as Error).message ?? error) : null,
      netPrefix: prefix,
      pids: this.pids,
      leftover,
      leftoverNamespaces: leftoverNs,
      pass,
    };
    process.stdout.write(`DEMO-SUMMARY ${JSON.stringify(json)}\n`);
    return this.abortedBy ? 130 : pass ? 0 : 1;
  }
}
