/**
 * The demo's story: six steps played against the running stack (scale up/down, drain, a new
 * domain, a new service, an etcd outage), each saying what it shows and measuring how fast
 * HAProxy followed. Every wait ends at once when the demo is aborted.
 */
import { waitFor } from '../../testkit/index.js';
import { C, say } from './screen.js';
import { PREFIX, type Registrar } from './registrars.js';
import type { Demo } from './stack.js';

export async function story(d: Demo): Promise<void> {
  const o = d.o;
  // Dwell unit: the story's fixed work takes ~25 s; the rest of --duration is spread over the steps.
  const u = Math.min(8000, Math.max(400, ((o.durationS - 27) * 1000) / 8.5));
  const shop = (n: number) => `shop-${n}`;

  // (1) shop with 2 instances — registered before the updater started, so they are in HAProxy's first config.
  await d.setStep(1, 'service shop at shop.localhost, 2 instances', 'membership', 'two apps registered themselves with `haproxy-updater register`; traffic flows');
  await d.pause(2 * u);

  // (2) scale up to 5, then down to 2
  await d.setStep(2, 'scale shop 2 → 5 → 2', 'membership', 'new instances fill free server slots (4 declared), the 5th gets a dynamic server (add server): Runtime API, no reload');
  const added: Registrar[] = [];
  for (const n of [3, 4, 5]) {
    const reg = await d.addInstance('shop', 'shop.localhost', shop(n));
    added.push(reg);
    say(`started app ${reg.id} (127.0.0.1:${reg.app.port}) and its registrar`);
  }
  await Promise.all(added.map((r) => d.measureInstance(r, `scale up: ${r.id}`)));
  await d.pause(u);
  say('scaling down: SIGTERM to the registrars of shop-3..5, one after the other (they revoke their leases; HAProxy drains the servers)');
  // One at a time: three of five serving upstreams gone in one update is more than
  // --max-removal (50%), which the updater holds until `haproxy-updater release-hold`.
  for (const r of added) await d.removeInstance(r);
  say(`shop back to ${d.registrars.filter((r) => r.service === 'shop').length} instances`);
  await d.pause(u);

  // (3) drain one upstream, then remove it
  await d.setStep(3, 'drain shop-2, then remove it', 'membership', 'state "drain" in its etcd value: no new requests, in-flight ones finish');
  const victim = d.registrars.find((r) => r.id === shop(2))!;
  const value = JSON.stringify({ addr: `127.0.0.1:${victim.app.port}`, state: 'drain' });
  const lease = victim.leaseId ? BigInt(victim.leaseId).toString(16) : null;
  // Keep the registrar's lease on the key, so stopping the registrar still removes it.
  const inflightAtPut = victim.app.inflight;
  victim.app.mark();
  await d.etcd.ctl('put', ...(lease ? [`--lease=${lease}`] : []), victim.key, value);
  say(`put ${victim.key} = ${value}`);
  await waitFor(() => victim.app.inflight === 0 && Date.now() - Math.max(victim.app.markAt, victim.app.lastHitAt) > 1500, { timeoutMs: 15_000, intervalMs: 50, what: 'drain took effect', signal: d.signal });
  const lastNew = victim.app.lastHitAfterMarkAt ? `${victim.app.lastHitAfterMarkAt - victim.app.markAt} ms after the put` : 'none after the put';
  say(`drained: last new request to shop-2 ${lastNew}; ${victim.app.finishedAfterMark} of ${inflightAtPut} requests in flight at the put finished normally`);
  await d.pause(u / 2);
  say('removing shop-2 (registrar stopped: key deleted)');
  await d.removeInstance(victim);
  const repl = await d.addInstance('shop', 'shop.localhost', shop(6));
  say(`replacement ${repl.id} started (127.0.0.1:${repl.app.port})`);
  await d.measureInstance(repl, `replacement: ${repl.id}`);
  await d.pause(u);

  // (4) a new domain for shop
  await d.setStep(4, 'new domain store.localhost for shop', 'membership', 'hosts map updated over the Runtime API (add map) and the map file rewritten: no reload');
  const domainKey = `${PREFIX}/http-services/shop/domain`;
  const current = (await d.etcd.ctl('get', '--print-value-only', domainKey)).trim();
  const domains = [...new Set([...current.split(/[\s,]+/).filter(Boolean), 'store.localhost'])].join(',');
  const putAt = Date.now();
  await d.etcd.ctl('put', domainKey, domains);
  say(`put ${domainKey} = ${domains}`);
  const dms = await d.probe('store.localhost', (b) => b.startsWith('shop-'), putAt);
  d.convergence.push({ what: 'new domain store.localhost', ms: dms });
  say(`store.localhost routed to shop ${C.b(`${dms} ms`)} after the put; now part of the traffic`);
  d.traffic!.add('store.localhost');
  await d.pause(1.5 * u);

  // (5) a new service: structural, one reload
  await d.setStep(5, 'new service api at api.localhost', 'structural', 'a new backend is a STRUCTURAL change: render haproxy.cfg, validate, one guarded reload (expected)');
  const api1 = await d.addInstance('api', 'api.localhost', 'api-1');
  const apiAt = await api1.waitRegistered();
  const ams = await d.probe('api.localhost', (b) => b === 'api-1', apiAt);
  d.convergence.push({ what: 'new service api (reload)', ms: ams });
  say(`api.localhost answered by api-1 ${C.b(`${ams} ms`)} after its registration; now part of the traffic`);
  d.traffic!.add('api.localhost');
  // Let the reload(s) of this step be read before the next step starts.
  await d.pause(Math.max(1500, u));
  await d.syncReloads();

  // (6) etcd outage
  await d.setStep(6, 'etcd killed, HAProxy keeps serving', 'membership', 'the updater keeps the last good state (stale, never empty); changes after etcd returns are applied');
  const etcdPid = d.etcd.proc.pid;
  await d.etcd.kill();
  say(`etcd (pid ${etcdPid}) killed with SIGKILL`);
  await waitFor(async () => (await d.readMetrics(), d.etcdState !== 'watching'), { timeoutMs: 15_000, intervalMs: 100, what: 'updater notices the outage', signal: d.signal }).catch(() => undefined);
  say(`updater's etcd state: ${d.etcdState}; traffic continues`);
  await d.pause(o.outageMs ?? (o.short ? 3000 : 6000));
  d.checkAbort();
  await d.etcd.start();
  d.pids.etcd.push(d.etcd.proc.pid);
  say(`etcd restarted (pid ${d.etcd.proc.pid}, same data dir)`);
  await waitFor(async () => (await d.readMetrics(), d.etcdState === 'watching'), { timeoutMs: 30_000, intervalMs: 100, what: 'updater reconnects to etcd', signal: d.signal });
  say(`updater's etcd state: ${d.etcdState}`);
  const api2 = await d.addInstance('api', 'api.localhost', 'api-2');
  say(`scaling api up by one after the outage: ${api2.id} (127.0.0.1:${api2.app.port})`);
  await d.measureInstance(api2, `after etcd restart: ${api2.id}`);
  // Registrars that lost their lease during the outage were restarted; wait until all are registered again.
  await waitFor(() => d.registrars.every((r) => r.alive && r.registeredAt > 0), { timeoutMs: 20_000, intervalMs: 100, what: 'all registrars registered', signal: d.signal }).catch(() =>
    d.event('not every registrar is registered again 20 s after the outage'),
  );
  const restarted = d.registrarRestarts;
  say(restarted ? `${restarted} registrar(s) exited during the outage (lease lost) and were restarted` : 'every registrar kept its lease through the outage');
}
