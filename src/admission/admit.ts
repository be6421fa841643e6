/**
 * `--admission probe`: lets a new upstream in as soon as the updater's own probe passes,
 * instead of after HAProxy's `rise` checks.
 *
 * The planner lists the servers it holds DOWN (plan.admission). Their probes run here,
 * outside the daemon's pass and bounded in number, so a slow upstream never delays a change
 * to anything else. A passing probe becomes one small batch on the daemon's queue (the one
 * consumer of HAProxy changes): it first re-reads the server (`show servers state <be>`)
 * and the registry, because either may have moved on while the probe ran, and only if the
 * server still holds that address, held, and the upstream is still wanted ready, sends
 * `set server <b>/<s> health up` + `state ready`: traffic at once, HAProxy's checks carry on
 * (both slots and overflow servers have `check`). A failed probe changes nothing: the server
 * stays held and HAProxy's check decides, as with `--admission check`.
 */
import PQueue from 'p-queue';
import { logger } from '../log.js';
import { backendName, adminIsDrain, adminIsMaint, SRV_OP, type Registry } from '../model.js';
import { RuntimeClient, parseServersState, setServerHealth, setServerState, showServersState, type ServerStateRow } from '../runtime/index.js';
import type { AdmissionCandidate } from '../reconcile/index.js';
import type { Metrics } from '../metrics.js';
import { probe, type Verdict } from './probe.js';

const log = logger('admission');

export interface AdmissionOptions {
  runtime: RuntimeClient;
  /** Runs a task on the daemon's queue. */
  schedule: (task: () => Promise<void>) => Promise<unknown>;
  /** The registry in force now, re-checked before a server is let in. */
  desired: () => Registry | null;
  metrics: Metrics;
  /** After a server was let in whose plan left work waiting (`passAfter`): deferred drains, domains waiting for an UP server. */
  onAdmitted?: (backend: string, planWaited: boolean) => void;
  /** Deadline of one probe, ms. Default 500. */
  timeoutMs?: number;
  /** Probes at once. Default 32. */
  concurrency?: number;
}

/** Why a passing probe did not lead to a `health up` (or '' when it may). */
export function staleReason(c: AdmissionCandidate, row: ServerStateRow | undefined, registry: Registry | null): string {
  if (!row) return 'server gone';
  if (row.srvAddr !== c.addr || row.srvPort !== c.port) return `server now holds ${row.srvAddr}:${row.srvPort}`;
  const maint = adminIsMaint(row.srvAdminState);
  if (adminIsDrain(row.srvAdminState)) return 'server draining';
  if (c.held === 'down' && maint) return 'server in maintenance';
  if (c.held === 'maint' && !maint) return 'server already out of maintenance';
  if (c.held === 'down' && row.srvOpState === SRV_OP.RUNNING) return 'server already UP';
  const svc = registry && [...registry.http.values(), ...registry.tcp.values()].find((s) => backendName(s) === c.backend);
  const u = svc?.upstreams.get(c.upstreamId);
  if (!u || u.addr !== c.addr || u.port !== c.port || u.state !== 'ready') return 'upstream changed in the registry';
  return '';
}

export class Admission {
  readonly #o: AdmissionOptions;
  readonly #probes: PQueue;
  readonly #timeoutMs: number;
  /** backend/server@addr:port of probes running or waiting: one probe per new upstream. */
  readonly #inFlight = new Set<string>();
  #stopped = false;

  constructor(o: AdmissionOptions) {
    this.#o = o;
    this.#timeoutMs = o.timeoutMs ?? 500;
    this.#probes = new PQueue({ concurrency: Math.max(1, o.concurrency ?? 32) });
  }

  /**
   * Probes these candidates (returns at once; the probes and their batches run later).
   * `passAfter`: their plan left work pending, so a server let in calls `onAdmitted`.
   */
  submit(candidates: readonly AdmissionCandidate[], o: { passAfter?: boolean } = {}): void {
    for (const c of candidates) {
      const key = `${c.backend}/${c.server}@${c.addr}:${c.port}`;
      if (this.#stopped || this.#inFlight.has(key)) continue;
      this.#inFlight.add(key);
      void this.#probes
        .add(async () => {
          const v = await probe(c, c.probe, this.#timeoutMs);
          this.#o.metrics.admissionProbes.inc({ result: v.result });
          if (!v.ok) {
            log.info({ backend: c.backend, server: c.server, upstream: c.upstreamId, addr: c.addr, port: c.port, probe: c.probe.kind, result: v.result, detail: v.detail, ms: Math.round(v.ms) }, 'admission probe failed: HAProxy\'s check decides');
            return;
          }
          if (!this.#stopped) await this.#o.schedule(() => this.#admit(c, v, o.passAfter ?? false));
        })
        .catch((err: unknown) => log.warn({ err, backend: c.backend, server: c.server }, 'admission failed: HAProxy\'s check decides'))
        .finally(() => this.#inFlight.delete(key));
    }
  }

  /** On the daemon's queue: re-check, then let the server in. */
  async #admit(c: AdmissionCandidate, v: Verdict, passAfter: boolean): Promise<void> {
    if (this.#stopped) return;
    const rows = parseServersState(await this.#o.runtime.run(showServersState(c.backend)));
    const stale = staleReason(c, rows.find((r) => r.srvName === c.server), this.#o.desired());
    if (stale) {
      log.debug({ backend: c.backend, server: c.server, upstream: c.upstreamId, why: stale }, 'probe passed but the server moved on; nothing sent');
      return;
    }
    const results = await this.#o.runtime.batch([setServerHealth(c.backend, c.server, 'up'), setServerState(c.backend, c.server, 'ready')]);
    for (const [i, r] of results.entries()) this.#o.metrics.runtimeCommands.inc({ command: i === 0 ? 'set-health' : 'set-state', result: r.ok ? 'ok' : r.error.code });
    const failed = results.find((r) => !r.ok);
    if (failed && !failed.ok) {
      log.warn({ backend: c.backend, server: c.server, err: failed.error }, 'admission command refused: HAProxy\'s check decides');
      return;
    }
    log.debug({ backend: c.backend, server: c.server, upstream: c.upstreamId, probe: c.probe.kind, ms: Math.round(v.ms) }, 'admission probe passed: server let in');
    this.#o.onAdmitted?.(c.backend, passAfter);
  }

  /** No new probes or batches; waits for running probes (each bounded by the deadline). */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#probes.clear();
    await this.#probes.onIdle();
  }
}
