/**
 * Prometheus metrics of the updater (prom-client), served on `--listen` at /metrics.
 * A registry per Metrics instance so tests and several daemons in one process do not
 * share counters.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

export class Metrics {
  readonly registry = new Registry();
  readonly reloads = new Counter({
    name: 'haproxy_updater_reloads_total',
    help: 'HAProxy reloads performed by the updater, by reason and result',
    labelNames: ['reason', 'result'] as const,
    registers: [this.registry],
  });
  readonly runtimeCommands = new Counter({
    name: 'haproxy_updater_runtime_commands_total',
    help: 'Runtime API commands sent, by command family and result',
    labelNames: ['command', 'result'] as const,
    registers: [this.registry],
  });
  readonly rejectedEntries = new Gauge({
    name: 'haproxy_updater_registry_rejected_entries',
    help: 'Registry entries currently rejected (bad key or value)',
    registers: [this.registry],
  });
  readonly claimConflicts = new Gauge({
    name: 'haproxy_updater_registry_claim_conflicts',
    help: 'Domain or tcp port claims currently rejected because another service claimed the same first (etcd create_revision)',
    registers: [this.registry],
  });
  readonly rejectionsTotal = new Counter({
    name: 'haproxy_updater_registry_rejections_total',
    help: 'Registry entries rejected, counted each time a registry snapshot is rebuilt with them',
    registers: [this.registry],
  });
  readonly convergence = new Histogram({
    name: 'haproxy_updater_convergence_seconds',
    help: 'Time from an etcd change reaching the updater to HAProxy reflecting it',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  /** Where a structural change's time goes (the benchmark splits "new service" with it). */
  readonly reloadPhase = new Histogram({
    name: 'haproxy_updater_reload_phase_seconds',
    help: 'Time of each phase of a reload: render (haproxy.cfg from the registry), check (haproxy -c), reload (master reload until the new worker runs)',
    labelNames: ['phase'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  readonly slots = new Gauge({
    name: 'haproxy_updater_slots',
    help: 'Server slots by state (free, active, draining, maint, overflow)',
    labelNames: ['state'] as const,
    registers: [this.registry],
  });
  readonly etcdState = new Gauge({
    name: 'haproxy_updater_etcd_connection_state',
    help: '1 for the current etcd connection state of the watcher, 0 for the others',
    labelNames: ['state'] as const,
    registers: [this.registry],
  });
  readonly etcdEndpoint = new Gauge({
    name: 'haproxy_updater_etcd_endpoint',
    help: '1 for the etcd endpoint (member) the watcher reads from, 0 for the other configured ones',
    labelNames: ['endpoint'] as const,
    registers: [this.registry],
  });
  readonly registryStale = new Gauge({
    name: 'haproxy_updater_registry_stale',
    help: '1 while etcd is unreachable and the last good registry is kept in force',
    registers: [this.registry],
  });
  readonly registryHeld = new Gauge({
    name: 'haproxy_updater_registry_held',
    help: '1 while a registry update that removes too many serving upstreams (--max-removal) is held; release with `haproxy-updater release-hold`',
    registers: [this.registry],
  });
  readonly servicesUnserved = new Gauge({
    name: 'haproxy_updater_services_unserved',
    help: 'Services with upstreams registered (state ready) and no serving server in HAProxy',
    registers: [this.registry],
  });
  readonly passes = new Counter({
    name: 'haproxy_updater_passes_total',
    help: 'Reconcile passes (observe, plan, apply), by result',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  readonly passSeconds = new Histogram({
    name: 'haproxy_updater_pass_duration_seconds',
    help: 'Duration of a successful reconcile pass: full (reads all of HAProxy) or incremental (the changed backends only)',
    labelNames: ['kind'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [this.registry],
  });
  readonly admissionProbes = new Counter({
    name: 'haproxy_updater_admission_probes_total',
    help: 'Admission probes of new upstreams (--admission probe), by verdict: ok, refused, timeout, http-status, tls, error',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  readonly haproxyReloads = new Gauge({
    name: 'haproxy_updater_haproxy_master_reloads',
    help: "HAProxy master's own reload counter, as read from `show proc`",
    registers: [this.registry],
  });
  readonly haproxyOldWorkers = new Gauge({
    name: 'haproxy_updater_haproxy_old_workers',
    help: 'HAProxy workers of earlier configs still finishing their connections (show proc); bounded by hard-stop-after and mworker-max-reloads',
    registers: [this.registry],
  });
  readonly quarantined = new Gauge({
    name: 'haproxy_updater_quarantined_services',
    help: 'Services HAProxy refused, left out of haproxy.cfg until their registry keys change (the rest is applied)',
    registers: [this.registry],
  });
  readonly reloadFailures = new Gauge({
    name: 'haproxy_updater_reload_consecutive_failures',
    help: 'Reloads in a row that failed at the HAProxy master (rolled back); 0 after a good one',
    registers: [this.registry],
  });
  readonly reloadBackoff = new Gauge({
    name: 'haproxy_updater_reload_backoff_seconds',
    help: 'Wait before the config that failed at the master is tried again (doubles per failure); 0 when none failed',
    registers: [this.registry],
  });

  readonly haproxyInfo = new Gauge({
    name: 'haproxy_updater_haproxy_info',
    help: 'The running HAProxy (show info) and the capabilities the updater uses with it; 1 for the current pair',
    labelNames: ['version', 'capabilities'] as const,
    registers: [this.registry],
  });

  readonly certsServed = new Gauge({
    name: 'haproxy_updater_certificates_served',
    help: 'Certificates from --certs that HAProxy serves (the generated default not counted)',
    registers: [this.registry],
  });
  readonly certExpiryDays = new Gauge({
    name: 'haproxy_updater_certificate_expiry_days',
    help: 'Days until the soonest-expiring served certificate expires (absent while none is served); alert on this',
    registers: [this.registry],
  });
  readonly certFailures = new Counter({
    name: 'haproxy_updater_certificate_update_failures_total',
    help: 'Certificate updates that failed: a file rejected (reason: the problem found) or a runtime step refused (runtime, remove)',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly certRejected = new Gauge({
    name: 'haproxy_updater_certificate_rejected',
    help: '1 for each file in --certs currently rejected, by path and reason; the certificate it would replace keeps serving',
    labelNames: ['path', 'reason'] as const,
    registers: [this.registry],
  });

  /** Certificate gauges from CertSync's state after a pass. */
  setCertificates(served: number, soonestNotAfter: Date | null, rejected: ReadonlyArray<{ path: string; reason: string }>, now = Date.now()): void {
    this.certsServed.set(served);
    if (soonestNotAfter) this.certExpiryDays.set(Math.floor(((soonestNotAfter.getTime() - now) / 86_400_000) * 100) / 100);
    else this.certExpiryDays.reset();
    this.certRejected.reset();
    for (const r of rejected) this.certRejected.set({ path: r.path, reason: r.reason }, 1);
  }

  setHaproxyInfo(version: string, capabilities: string): void {
    this.haproxyInfo.reset();
    this.haproxyInfo.set({ version, capabilities }, 1);
  }

  setEtcdEndpoint(current: string, all: readonly string[]): void {
    for (const e of all) this.etcdEndpoint.set({ endpoint: e }, e === current ? 1 : 0);
  }

  setEtcdState(state: string, all: readonly string[]): void {
    for (const s of all) this.etcdState.set({ state: s }, s === state ? 1 : 0);
  }
}
