/**
 * Several HAProxy instances, each with its own updater, on a 3-member etcd cluster, across
 * test hosts (network namespaces, testkit/hosts.ts). Every scenario runs under load from a client
 * host through every load-balancer host and asserts 0 failed requests and the same routed
 * servers on every instance; reloads are read from each HAProxy master CLI.
 * Measured figures (failover, cross-instance spread) are printed with CLUSTER_REPORT=1.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { waitFor, sleep, percentile, type Proc, masterView, BIN } from '../../testkit/index.js';
import {
  TestNet,
  hostsSkipReason,
  startEtcdCluster,
  startLb,
  startUpstreams,
  waitUpstream,
  serverView,
  startLoad,
  killProcess,
  routedAt,
  type Host,
  type EtcdCluster,
  type EtcdMember,
  type LbInstance,
  type LoadRun,
} from '../../testkit/hosts.js';

const P = '/haproxy-discover';
const SERVICE = 'web';
/** The HAProxy backend of http service `web`. */
const BACKEND = 'http-web';
const skip = hostsSkipReason();
const report: Record<string, unknown> = {};

let net: TestNet;
let etcd: EtcdCluster;
let client: Host;
let up1: Host;
let up2: Host;
let up3: Host;
const lbs: LbInstance[] = [];
const upKey = (id: string) => `${P}/http-services/${SERVICE}/upstreams/${id}`;

const ofBackend = (view: string[]) => view.filter((l) => l.startsWith(`${BACKEND} `)).map((l) => l.slice(BACKEND.length + 1));

/** Routed `addr:port`s of the web backend on each instance. */
async function routed(): Promise<string[][]> {
  return (await Promise.all(lbs.map((lb) => serverView(lb)))).map(ofBackend);
}

/**
 * Waits until every instance routes exactly `want` (each address once); returns when each got
 * there (ms after `since`). `includeDown`: servers HAProxy has but finds down count too.
 */
const convergeAll = (want: string[], since: number, timeoutMs = 10_000, on: LbInstance[] = lbs, includeDown = false): Promise<number[]> =>
  routedAt(on, BACKEND, want, since, { timeoutMs, includeDown });

function loadAll(): LoadRun {
  return startLoad(
    client,
    lbs.map((lb) => ({ url: `http://${lb.host.ip}/`, host: 'web.test' })),
    { concurrency: 2, durationMs: 120_000, maxRequests: 200_000 },
  );
}

async function assertNoFailures(load: LoadRun, what: string): Promise<void> {
  const results = await load.stop();
  results.forEach((r, i) => {
    assert.ok(r.ok > 0, `${what}: no request answered through ${lbs[i]!.host.name}`);
    assert.equal(r.failed, 0, `${what}: ${r.failed} failed requests through ${lbs[i]!.host.name}: ${JSON.stringify(r.failures)}`);
  });
}

const reloads = () => Promise.all(lbs.map(async (lb) => (await masterView(lb.masterSocket)).reloads));

/** etcdctl until etcd accepts it (a cluster electing a leader refuses writes for a while); returns when it did. */
async function ctlRetrying(...args: string[]): Promise<number> {
  let ok = 0;
  await waitFor(async () => (await etcd.ctl(...args).then(() => (ok = Date.now()))) > 0, { timeoutMs: 15_000, intervalMs: 50, what: `etcdctl ${args.join(' ')}` });
  return ok;
}

const memberOfEndpoint = (e: string): EtcdMember | undefined => etcd.members.find((m) => m.endpoint === e);

/** The endpoint an instance's watcher reads from (its `haproxy_updater_etcd_endpoint` gauge at 1). */
async function endpointOf(lb: LbInstance): Promise<string | null> {
  for (const e of etcd.endpoints) if ((await lb.metric('haproxy_updater_etcd_endpoint', `endpoint="${e}"`)) === 1) return e;
  return null;
}

describe('several instances on a 3-member etcd cluster, across test hosts', { skip: skip ?? false }, () => {
  before(async () => {
    net = await TestNet.create();
    const e = [await net.addHost('etcd1', 11), await net.addHost('etcd2', 12), await net.addHost('etcd3', 13)];
    const lbHosts = [await net.addHost('lb1', 21), await net.addHost('lb2', 22), await net.addHost('lb3', 23)];
    up1 = await net.addHost('up1', 31);
    up2 = await net.addHost('up2', 32);
    up3 = await net.addHost('up3', 33);
    client = await net.addHost('client', 41);
    etcd = await startEtcdCluster(net, e, client);
    startUpstreams(up1, [8001, 8002, 8003, 8004]);
    startUpstreams(up2, [8001, 8002, 8003, 8004]);
    await waitUpstream(up1, 8004);
    await waitUpstream(up2, 8004);
    await etcd.ctl('put', `${P}/http-services/${SERVICE}/domain`, 'web.test');
    await etcd.ctl('put', upKey('up1-8001'), `${up1.ip}:8001`);
    await etcd.ctl('put', upKey('up2-8001'), `${up2.ip}:8001`);
    // Each instance lists a different member first: the watches spread over the cluster.
    const eps = etcd.endpoints;
    lbs.push(
      ...(await Promise.all(lbHosts.map((h, i) => startLb(h, { etcd: [...eps.slice(i), ...eps.slice(0, i)], extraArgs: ['--no-hold-until-healthy'] })))),
    );
    await convergeAll([`${up1.ip}:8001`, `${up2.ip}:8001`], Date.now(), 20_000);
  });

  after(async () => {
    if (process.env.CLUSTER_REPORT) process.stdout.write(`cluster report: ${JSON.stringify(report)}\n`);
    await etcd?.destroy();
    await net?.destroy();
  });

  test('churn: every instance ends with the same servers, 0 failed requests, 0 reloads', async () => {
    const before = await reloads();
    const load = loadAll();
    const stable = [`${up1.ip}:8001`, `${up2.ip}:8001`];
    const extra = [8002, 8003, 8004].flatMap((p) => [`${up1.ip}:${p}`, `${up2.ip}:${p}`]);
    const live = new Set<string>();
    const spreads: number[] = [];
    const firsts: number[] = [];
    for (let i = 0; i < 24; i++) {
      const addr = extra[i % extra.length]!;
      const id = addr.replace(/[.:]/g, '-');
      const t0 = Date.now();
      if (live.has(addr)) {
        live.delete(addr);
        await etcd.ctl('del', upKey(id));
      } else {
        live.add(addr);
        await etcd.ctl('put', upKey(id), addr);
      }
      const at = await convergeAll([...stable, ...live], t0);
      firsts.push(Math.min(...at));
      spreads.push(Math.max(...at) - Math.min(...at));
    }
    for (const addr of live) await etcd.ctl('del', upKey(addr.replace(/[.:]/g, '-')));
    await convergeAll(stable, Date.now());
    await assertNoFailures(load, 'churn');
    assert.deepEqual(await reloads(), before, 'HAProxy reloads during churn (master CLI)');
    report.churn = {
      changes: spreads.length,
      firstInstanceMs: { p50: percentile(firsts, 50), p99: percentile(firsts, 99) },
      spreadMs: { p50: percentile(spreads, 50), p99: percentile(spreads, 99), max: Math.max(...spreads) },
    };
  });

  test('a member cut off from the quorum (still reachable by clients) makes its watchers move', async () => {
    const leader = await etcd.leader();
    // An instance watching a follower: isolating that follower from its peers only.
    let lb: LbInstance | undefined;
    let member: EtcdMember | undefined;
    for (const l of lbs) {
      const m = memberOfEndpoint((await endpointOf(l)) ?? '');
      if (m && m !== leader) {
        lb = l;
        member = m;
        break;
      }
    }
    assert.ok(lb && member, 'no instance watches a follower');
    const load = loadAll();
    const t0 = Date.now();
    await member.host.iptables('-A', 'INPUT', '-p', 'tcp', '--dport', '2380', '-j', 'DROP');
    await member.host.iptables('-A', 'INPUT', '-p', 'tcp', '--sport', '2380', '-j', 'DROP');
    try {
      const moved = await waitFor(async () => {
        const e = await endpointOf(lb);
        return e && e !== member.endpoint ? e : null;
      }, { timeoutMs: 20_000, intervalMs: 100, what: `${lb.host.name} leaving the partitioned ${member.name}` });
      report.partitionedMemberMoveMs = Date.now() - t0;
      assert.notEqual(moved, member.endpoint);
      // A change made while the member is cut off reaches every instance.
      const t1 = Date.now();
      await ctlRetrying('put', upKey('up1-8002'), `${up1.ip}:8002`);
      await convergeAll([`${up1.ip}:8001`, `${up2.ip}:8001`, `${up1.ip}:8002`], t1);
    } finally {
      await member.host.iptables('-F', 'INPUT');
    }
    await ctlRetrying('del', upKey('up1-8002'));
    await convergeAll([`${up1.ip}:8001`, `${up2.ip}:8001`], Date.now());
    await assertNoFailures(load, 'partitioned member');
    await waitFor(async () => (await etcd.ctl('endpoint', 'health').then(() => true)), { timeoutMs: 20_000, intervalMs: 200, what: 'etcd healed' });
  });

  test('the etcd leader killed: every instance keeps serving, fails over, gets the change made meanwhile once', async () => {
    const before = await reloads();
    const load = loadAll();
    const leader = await etcd.leader();
    const onLeader = [];
    for (const lb of lbs) if ((await endpointOf(lb)) === leader.endpoint) onLeader.push(lb);
    const t0 = Date.now();
    await etcd.kill(leader);
    // The instances that watched the leader: when each reads from another member again.
    const movedAt = Promise.all(
      onLeader.map((lb) =>
        waitFor(async () => ((await endpointOf(lb)) ?? leader.endpoint) !== leader.endpoint, { timeoutMs: 20_000, intervalMs: 50, what: `${lb.host.name} off the dead leader` }).then(
          () => Date.now() - t0,
        ),
      ),
    );
    const want = [`${up1.ip}:8001`, `${up2.ip}:8001`, `${up2.ip}:8002`];
    const written = await ctlRetrying('put', upKey('failover'), `${up2.ip}:8002`);
    const at = await convergeAll(want, t0, 20_000);
    report.leaderKill = {
      watchersOnLeader: onLeader.length,
      watchMovedMs: await movedAt,
      writeAvailableMs: written - t0,
      routedEverywhereMs: { first: Math.min(...at), last: Math.max(...at) },
    };
    // Applied once: each instance routes that address exactly once (convergeAll compares lists).
    await etcd.start(leader);
    await ctlRetrying('del', upKey('failover'));
    await convergeAll([`${up1.ip}:8001`, `${up2.ip}:8001`], Date.now());
    await assertNoFailures(load, 'leader kill');
    assert.deepEqual(await reloads(), before, 'HAProxy reloads during the failover');
  });

  test('one load balancer cut off from etcd keeps serving, reports stale, converges within 2 s of healing', async () => {
    const load = loadAll();
    const cut = lbs[2]!;
    const others = lbs.slice(0, 2);
    // Only its etcd traffic: clients still reach it.
    await cut.host.iptables('-A', 'OUTPUT', '-p', 'tcp', '--dport', '2379', '-j', 'DROP');
    let healed = false;
    try {
      // The idle watch stream goes quiet: gRPC keepalive (10 s + 5 s) notices.
      await waitFor(async () => (await cut.metric('haproxy_updater_registry_stale')) === 1, { timeoutMs: 30_000, intervalMs: 250, what: `${cut.host.name} stale` });
      const t1 = Date.now();
      await etcd.ctl('put', upKey('up1-8003'), `${up1.ip}:8003`);
      const want = [`${up1.ip}:8001`, `${up2.ip}:8001`, `${up1.ip}:8003`];
      await convergeAll(want, t1, 10_000, others);
      assert.deepEqual((await routed())[2], [`${up1.ip}:8001`, `${up2.ip}:8001`].sort(), 'the cut-off instance keeps its last state');
      await cut.host.iptables('-D', 'OUTPUT', '-p', 'tcp', '--dport', '2379', '-j', 'DROP');
      healed = true;
      const t2 = Date.now();
      const [ms] = await convergeAll(want, t2, 10_000, [cut]);
      report.cutOffHealConvergeMs = ms;
      assert.ok(ms! <= 2000, `converged ${ms} ms after healing (want <= 2000)`);
      assert.equal(await cut.metric('haproxy_updater_registry_stale'), 0);
    } finally {
      if (!healed) await cut.host.iptables('-F', 'OUTPUT');
    }
    await etcd.ctl('del', upKey('up1-8003'));
    await convergeAll([`${up1.ip}:8001`, `${up2.ip}:8001`], Date.now());
    await assertNoFailures(load, 'cut-off instance');
  });

  test('rolling restart of the updaters, one host at a time: 0 failed requests, 0 reloads', async () => {
    const before = await reloads();
    const load = loadAll();
    for (const lb of lbs) {
      await lb.killUpdater();
      await sleep(300);
      await lb.startUpdater();
    }
    const t0 = Date.now();
    await etcd.ctl('put', upKey('up2-8003'), `${up2.ip}:8003`);
    await convergeAll([`${up1.ip}:8001`, `${up2.ip}:8001`, `${up2.ip}:8003`], t0);
    await etcd.ctl('del', upKey('up2-8003'));
    await convergeAll([`${up1.ip}:8001`, `${up2.ip}:8001`], Date.now());
    await assertNoFailures(load, 'rolling restart');
    assert.deepEqual(await reloads(), before, 'HAProxy reloads during the rolling restart');
  });

  test('an upstream host with registrars killed (servers and registrars): its upstreams gone from every instance within the TTL', async () => {
    const ttlMs = 3000;
    const ports = [8001, 8002];
    const servers = startUpstreams(up3, ports);
    await waitUpstream(up3, 8002);
    const registrars: Proc[] = [];
    for (const port of ports) {
      registrars.push(
        up3.spawn(process.execPath, [
          '--import', 'tsx', BIN, 'register',
          '--etcd', etcd.endpoints.join(','),
          '--domain', 'web.test', '--service', SERVICE, '--id', `up3-${port}`,
          '--addr', `${up3.ip}:${port}`, '--ttl', `${ttlMs}ms`, '--log-level', 'warn',
        ]),
      );
    }
    const base = [`${up1.ip}:8001`, `${up2.ip}:8001`];
    await convergeAll([...base, ...ports.map((p) => `${up3.ip}:${p}`)], Date.now(), 20_000);
    await sleep(500);
    const load = loadAll();
    await sleep(500);
    // The whole host dies at once: its upstream servers and its registrars, SIGKILL by PID
    // (nothing deregisters, only the lease TTL removes the keys). Requests in flight to it are
    // retried on another server (`retry-on` + `option redispatch` in the template): 0 failed.
    const t0 = Date.now();
    await Promise.all([servers, ...registrars].map((p) => killProcess(p)));
    // Gone from the registry, not merely failing checks: down servers count as present here.
    const at = await convergeAll(base, t0, ttlMs + 5000, lbs, true);
    report.registrarHostKilledGoneMs = Math.max(...at);
    assert.ok(Math.max(...at) <= ttlMs + 1000, `gone after ${Math.max(...at)} ms (TTL ${ttlMs} ms)`);
    await assertNoFailures(load, 'upstream host killed');
  });

  test('the whole etcd cluster gone: every instance keeps serving its last state', async () => {
    const before = await routed();
    const load = loadAll();
    await Promise.all(etcd.members.map((m) => etcd.kill(m)));
    await waitFor(async () => (await Promise.all(lbs.map((lb) => lb.metric('haproxy_updater_registry_stale')))).every((v) => v === 1), {
      timeoutMs: 30_000,
      intervalMs: 250,
      what: 'every instance stale',
    });
    await sleep(1000);
    assert.deepEqual(await routed(), before, 'routed servers changed with etcd gone');
    for (const lb of lbs) assert.equal((await lb.get('/healthz')).status, 200);
    await assertNoFailures(load, 'etcd cluster gone');
  });
});
