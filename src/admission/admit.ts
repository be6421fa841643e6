/**
 * `--admission probe`: lets a new upstream in as soon as the updater's own probe passes,
 * instead of after HAProxy's `rise` checks.
 *
 * The planner lists the servers it holds DOWN (plan.admission). Their probes run here,
 * outside the daemon's pass and bounded in number, so a slow upstream never delays a change
 * to anything else. Passing probes join one admission batch on the daemon's queue (the one
 * consumer of HAProxy changes); probes passing while it waits behind a pass ride along. The
 * batch first re-reads the servers (`show servers state <be>`, once per backend, one
 * connection) and the registry, because either may have moved on while the probes ran, and
 * for each server that still holds that address, held, with the upstream still wanted
 * ready, sends `set server <b>/<s> health up` + `state ready`, all in one runtime batch:
 * traffic at once, HAProxy's checks carry on (both slots and overflow servers have `check`). A failed probe changes nothing: the server
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
  /** Probes at once. Default 64 (loopback connects are cheap; each is bounded by the deadline). */
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

interface Passed {
  readonly c: AdmissionCandidate;
  readonly v: Verdict;
  /** Its plan left work pending (see `submit`). */
  readonly passAfter: boolean;
}

export class Admission {
  readonly #o: AdmissionOptions;
  readonly #probes: PQueue;
  readonly #timeoutMs: number;
  /** backend/server@addr:port of probes running or waiting: one probe per new upstream. */
  readonly #inFlight = new Set<string>();
  /** Passed probes waiting for the next admission batch, and that batch (null: none scheduled). */
  #passed: Passed[] = [];
  #batch: Promise<void> | null = null;
  #stopped = false;

  constructor(o: AdmissionOptions) {
    this.#o = o;
    this.#timeoutMs = o.timeoutMs ?? 500;
    this.#probes = new PQueue({ concurrency: Math.max(1, o.concurrency ?? 64) });
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
      // Only the probe holds one of the bounded slots; waiting for its batch does not.
      // The key stays in flight until the batch ran, so a later pass does not probe it again.
      void (async () => {
        const v = await this.#probes.add(() => probe(c, c.probe, this.#timeoutMs));
        this.#o.metrics.admissionProbes.inc({ result: v.result });
        if (!v.ok) {
          log.info({ backend: c.backend, server: c.server, upstream: c.upstreamId, addr: c.addr, port: c.port, probe: c.probe.kind, result: v.result, detail: v.detail, ms: Math.round(v.ms) }, 'admission probe failed: HAProxy\'s check decides');
          return;
        }
        if (!this.#stopped) await this.#enqueue({ c, v, passAfter: o.passAfter ?? false });
      })()
        .catch((err: unknown) => log.warn({ err, backend: c.backend, server: c.server }, 'admission failed: HAProxy\'s check decides'))
        .finally(() => this.#inFlight.delete(key));
    }
  }

  /**
   * Joins the next admission batch, scheduling it on the daemon's queue if none is waiting;
   * resolves when the batch that took this server has run. Probes passing while a batch
   * waits behind a pass ride along: a burst of 1000 new upstreams costs a few queue tasks
   * and a few socket connections, not 1000 of each.
   */
  #enqueue(p: Passed): Promise<void> {
    this.#passed.push(p);
    this.#batch ??= this.#o.schedule(() => this.#admitBatch()).then(() => undefined);
    return this.#batch;
  }

  /** On the daemon's queue: re-check every passed server (one read per backend), then let the current ones in, in one batch. */
  async #admitBatch(): Promise<void> {
    const passed = this.#passed;
    this.#passed = [];
    this.#batch = null;
    if (this.#stopped || passed.length === 0) return;
    const backends = [...new Set(passed.map((p) => p.c.backend))];
    const reads = await this.#o.runtime.batch(backends.map((be) => showServersState(be)));
    const rows = new Map<string, ServerStateRow[]>();
    reads.forEach((r, i) => {
      // A backend that cannot be read (gone with a reload): its servers are judged 'server gone'.
      rows.set(backends[i]!, r.ok ? parseServersState(r.reply) : []);
    });
    const desired = this.#o.desired();
    const admit: Passed[] = [];
    for (const p of passed) {
      const stale = staleReason(p.c, rows.get(p.c.backend)?.find((r) => r.srvName === p.c.server), desired);
      if (stale) log.debug({ backend: p.c.backend, server: p.c.server, upstream: p.c.upstreamId, why: stale }, 'probe passed but the server moved on; nothing sent');
      else admit.push(p);
    }
    if (admit.length === 0) return;
    const results = await this.#o.runtime.batch(admit.flatMap((p) => [setServerHealth(p.c.backend, p.c.server, 'up'), setServerState(p.c.backend, p.c.server, 'ready')]));
    for (const [i, r] of results.entries()) this.#o.metrics.runtimeCommands.inc({ command: i % 2 === 0 ? 'set-health' : 'set-state', result: r.ok ? 'ok' : r.error.code });
    const waited = new Map<string, boolean>();
    admit.forEach((p, i) => {
      const failed = [results[2 * i], results[2 * i + 1]].find((r) => r && !r.ok);
      if (failed && !failed.ok) {
        log.warn({ backend: p.c.backend, server: p.c.server, err: failed.error }, 'admission command refused: HAProxy\'s check decides');
        return;
      }
      log.debug({ backend: p.c.backend, server: p.c.server, upstream: p.c.upstreamId, probe: p.c.probe.kind, ms: Math.round(p.v.ms) }, 'admission probe passed: server let in');
      waited.set(p.c.backend, (waited.get(p.c.backend) ?? false) || p.passAfter);
    });
    for (const [backend, planWaited] of waited) this.#o.onAdmitted?.(backend, planWaited);
  }

  /** No new probes or batches; waits for running probes (each bounded by the deadline). */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#probes.clear();
    await this.#probes.onIdle();
  }
}
