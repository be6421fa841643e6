/**
 * Cluster: two load-balancer hosts (HAProxy + updater each) on a 3-member etcd cluster, in
 * network namespaces (testkit/hosts.ts). For each change (an upstream added or removed with
 * etcdctl on the client host): the time until the first instance routes it (single-instance
 * convergence, including the etcdctl start in its namespace) and the spread, i.e. the last
 * instance minus the first. Then the etcd leader is killed and an upstream written as soon
 * as the cluster accepts writes: failover = kill → that change routed on every instance.
 * Needs root; otherwise skipped with the reason.
 */
import { percentile } from '../testkit/index.js';
import { TestNet, hostsSkipReason, startEtcdCluster, startLb, startUpstreams, waitUpstream, routedAt, type LbInstance } from '../testkit/hosts.js';
import { round } from './lib.js';
import type { Ctx } from './setup.js';

export type ClusterResult =
  | { skipped: string }
  | {
      instances: number;
      changes: number;
      /** Last minus first instance to route each change, ms. */
      spreadMs: { p50: number; p99: number };
      /** etcdctl start → the first instance routing the change, ms. */
      convergenceMs: { p50: number; p99: number };
      /** etcd leader SIGKILLed → a change written meanwhile routed on every instance, s. */
      failoverS: number;
    };

const P = '/haproxy-discover';
const SERVICE = 'web';
const BACKEND = 'http-web';

export async function cluster(ctx: Ctx): Promise<ClusterResult> {
  const skip = hostsSkipReason();
  if (skip) return { skipped: skip };
  const changes = ctx.args.clusterChanges;
  const upKey = (id: string) => `${P}/http-services/${SERVICE}/upstreams/${id}`;
  const net = await TestNet.create();
  try {
    const e = [await net.addHost('etcd1', 11), await net.addHost('etcd2', 12), await net.addHost('etcd3', 13)];
    const lbHosts = [await net.addHost('lb1', 21), await net.addHost('lb2', 22)];
    const up = await net.addHost('up1', 31);
    const client = await net.addHost('client', 41);
    const etcd = await startEtcdCluster(net, e, client);
    try {
      const ports = [8001, 8002, 8003, 8004, 8005, 8006];
      startUpstreams(up, ports);
      await waitUpstream(up, 8006);
      await etcd.ctl('put', `${P}/http-services/${SERVICE}/domain`, 'web.test');
      await etcd.ctl('put', upKey('base'), `${up.ip}:8001`);
      const eps = etcd.endpoints;
      // Each instance lists a different member first, as a real deployment would spread them.
      const lbs: LbInstance[] = await Promise.all(
        lbHosts.map((h, i) => startLb(h, { etcd: [...eps.slice(i), ...eps.slice(0, i)], extraArgs: ['--no-hold-until-healthy'] })),
      );
      const base = [`${up.ip}:8001`];
      await routedAt(lbs, BACKEND, base, Date.now(), { timeoutMs: 20_000 });

      // 8002-8005 come and go; 8006 is the change written during the failover.
      const extra = ports.slice(1, -1).map((p) => `${up.ip}:${p}`);
      const failAddr = `${up.ip}:8006`;
      const live = new Set<string>();
      const firsts: number[] = [];
      const spreads: number[] = [];
      for (let i = 0; i < changes; i++) {
        const addr = extra[i % extra.length]!;
        const id = addr.replace(/[.:]/g, '-');
        const t0 = Date.now();
        if (live.delete(addr)) await etcd.ctl('del', upKey(id));
        else {
          live.add(addr);
          await etcd.ctl('put', upKey(id), addr);
        }
        const at = await routedAt(lbs, BACKEND, [...base, ...live], t0);
        firsts.push(Math.min(...at));
        spreads.push(Math.max(...at) - Math.min(...at));
      }

      // Failover: the leader dies; a change is written once the cluster accepts writes again.
      const leader = await etcd.leader();
      const t0 = Date.now();
      await etcd.kill(leader);
      const deadline = Date.now() + 15_000;
      for (;;) {
        const ok = await etcd.ctl('put', upKey('failover'), failAddr).then(() => true, () => false);
        if (ok) break;
        if (Date.now() > deadline) throw new Error('etcd accepted no write within 15 s of the leader kill');
        await new Promise((r) => setTimeout(r, 50));
      }
      const at = await routedAt(lbs, BACKEND, [...base, ...live, failAddr], t0, { timeoutMs: 20_000 });
      return {
        instances: lbs.length,
        changes,
        spreadMs: { p50: round(percentile(spreads, 50)), p99: round(percentile(spreads, 99)) },
        convergenceMs: { p50: round(percentile(firsts, 50)), p99: round(percentile(firsts, 99)) },
        failoverS: round(Math.max(...at) / 1000, 2),
      };
    } finally {
      await etcd.destroy();
    }
  } finally {
    // Stops every process started in the namespaces (updaters, HAProxy, upstreams) by PID.
    await net.destroy();
  }
}
