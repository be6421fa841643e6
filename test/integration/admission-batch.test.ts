/**
 * Admission batching (issue #10, the burst) against a real HAProxy and real upstreams: many
 * servers held DOWN whose probes pass are let in by a few batches on the daemon's queue,
 * each reading every backend once and sending one runtime batch, not one queue task and
 * two connections per server; a server that moved on while its probe ran is left out of
 * the batch while the others get in.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import PQueue from 'p-queue';
import { Admission } from '../../src/admission/admit.js';
import { Metrics } from '../../src/metrics.js';
import { RuntimeClient, connectionCount, setServerAddr, setServerHealth, setServerState } from '../../src/runtime/index.js';
import { SRV_OP } from '../../src/model.js';
import type { AdmissionCandidate } from '../../src/reconcile/index.js';
import { freePort, haproxyTestConfig, readServers, startBackend, startHaproxy, type Backend, type HaproxyHandle } from '../../testkit/index.js';
import { http, reg, up } from '../unit/reconcile-helpers.js';

const closers: Array<() => Promise<void>> = [];
after(async () => {
  for (const c of closers.reverse()) await c().catch(() => undefined);
});

const BACKENDS = ['http-a', 'http-b', 'http-c'];
const PER_BACKEND = 10;

test('30 passing probes over 3 backends become a few admission batches; a server that moved on is skipped, the rest are UP', async () => {
  const haproxy: HaproxyHandle = await startHaproxy(haproxyTestConfig({ httpPort: await freePort(), backends: BACKENDS, slots: PER_BACKEND + 1 }));
  closers.push(() => haproxy.stop());
  const live: Backend = await startBackend('live');
  closers.push(() => live.close());
  const rt = new RuntimeClient({ path: haproxy.adminSocket }, { timeoutMs: 5000 });

  // Every slot holds the live upstream, ready but health DOWN: what the planner leaves for admission.
  const candidates: AdmissionCandidate[] = [];
  const setup = [];
  for (const be of BACKENDS) {
    for (let i = 1; i <= PER_BACKEND; i++) {
      const server = `s${i}`;
      // The planner's order (plan.ts): leaving maint resets health to up, so drain, health down, then ready.
      setup.push(setServerAddr(be, server, '127.0.0.1', live.port), setServerState(be, server, 'drain'), setServerHealth(be, server, 'down'), setServerState(be, server, 'ready'));
      candidates.push({ backend: be, server, upstreamId: `u${i}`, addr: '127.0.0.1', port: live.port, held: 'down', probe: { kind: 'tcp' } });
    }
  }
  assert.ok((await rt.batch(setup)).every((r) => r.ok));
  const desired = reg(...BACKENDS.map((be) => http(be.slice('http-'.length), Array.from({ length: PER_BACKEND }, (_, i) => up(`u${i + 1}`, `127.0.0.1:${live.port}`)))));
  // http-c/s1 moved on while its probe ran: a later pass gave the slot another address (a dead port, so HAProxy's own check never brings it UP).
  assert.ok((await rt.batch([setServerAddr('http-c', 's1', '127.0.0.1', 1)])).every((r) => r.ok));

  const queue = new PQueue({ concurrency: 1 });
  let tasks = 0;
  const admission = new Admission({
    runtime: rt,
    schedule: (task) => {
      tasks++;
      return queue.add(task);
    },
    desired: () => desired,
    metrics: new Metrics(),
  });
  // A pass holds the queue while the probes run, as in the daemon: passed probes gather behind it.
  let releasePass!: () => void;
  void queue.add(() => new Promise<void>((r) => (releasePass = r)));
  const connectionsBefore = connectionCount();
  admission.submit(candidates);
  await new Promise((r) => setTimeout(r, 300)); // every probe (a loopback connect) has passed by now
  releasePass();
  await queue.onIdle();
  await admission.stop();
  const connections = connectionCount() - connectionsBefore;

  assert.ok(tasks >= 1 && tasks <= 3, `expected 1-3 admission batches for ${candidates.length} servers, got ${tasks}`);
  assert.ok(connections <= 2 * tasks, `expected at most 2 socket connections per batch, got ${connections} for ${tasks} batches`);
  const rows = await readServers(haproxy.adminSocket);
  const op = (be: string, s: string) => rows.find((r) => r.beName === be && r.srvName === s)?.srvOpState;
  for (const c of candidates) {
    if (c.backend === 'http-c' && c.server === 's1') continue;
    assert.equal(op(c.backend, c.server), SRV_OP.RUNNING, `${c.backend}/${c.server} was not let in`);
  }
  assert.notEqual(op('http-c', 's1'), SRV_OP.RUNNING, 'the server that moved on was let in');
});
