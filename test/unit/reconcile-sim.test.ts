/**
 * Idempotence and convergence over randomized registry sequences: each plan is applied to
 * a simulated HAProxy (reconcile-helpers.ts Sim, which asserts the runtime order rules on
 * every op), time passes, and planning repeats until nothing is left to do. Then:
 * re-planning yields no ops and no urgent reason, also after a "restart" (empty
 * drainStartedAt); HAProxy holds exactly the registry; after the reload that non-urgent
 * reasons ride along with, the plan is completely empty. Seeded, bounded.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Registry } from '../../src/model.js';
import { plan, type Plan } from '../../src/reconcile/index.js';
import { prng, Sim, World } from './reconcile-helpers.js';

function checkPlanShape(p: Plan, desired: Registry): void {
  for (const s of [...desired.http.values(), ...desired.tcp.values()]) {
    const be = s.kind === 'tcp' ? `tcp-${s.name}` : `${s.sslPassthrough ? 'tls' : 'http'}-${s.name}`;
    assert.ok((p.capacity.get(be) ?? 0) >= s.options.minSlots, `capacity for ${be}`);
  }
  const writes = p.ops.filter((o) => o.kind === 'write-map-file').map((o) => o.map);
  assert.equal(new Set(writes).size, writes.length, 'write-map-file once per map');
  // map ops sit between the server ops that add and those that take away
  const firstMap = p.ops.findIndex((o) => o.kind.startsWith('map') || o.kind === 'write-map-file');
  if (firstMap >= 0) {
    for (const o of p.ops.slice(0, firstMap)) {
      assert.ok(!(o.kind === 'set-state' && o.state !== 'ready' && o.why.includes('removed')), `removal before map ops: ${o.why}`);
    }
  }
}

/** Plan/apply/tick until nothing is left to do; returns the last plan. */
function converge(sim: Sim, desired: Registry, rnd: () => number, hold: boolean, chaos: boolean): Plan {
  for (let i = 0; i < 600; i++) {
    if (chaos && rnd() < 0.03) sim.drainStartedAt = new Map(); // updater restart
    const p = plan(desired, sim.observe(), sim.ctx({ holdUntilHealthy: hold, drainTimeoutMs: 2_000 }));
    checkPlanShape(p, desired);
    if (p.ops.length === 0 && !p.reload && !p.pending) return p;
    if (chaos && p.ops.length > 1 && rnd() < 0.03) {
      // updater killed in the middle of a batch: only a prefix was applied
      const cut = Math.floor(rnd() * p.ops.length);
      for (const op of p.ops.slice(0, cut)) sim.applyOp(op);
      sim.drainStartedAt = new Map(p.drainStartedAt);
    } else {
      sim.apply(p);
      if (p.reload) sim.reload(desired, p.capacity);
    }
    sim.tick(rnd);
  }
  assert.fail('did not converge in 600 passes');
}

for (const { seed, hold } of [
  { seed: 1, hold: false },
  { seed: 2, hold: true },
  { seed: 3, hold: true },
]) {
  test(`random registry sequence (seed ${seed}, holdUntilHealthy ${hold}): converges, then re-planning is empty`, () => {
    const rnd = prng(seed);
    const world = new World(rnd);
    const sim = new Sim();
    let membershipOnlySteps = 0;
    let overflowSeen = 0;
    for (let step = 0; step < 200; step++) {
      const membershipOnly = world.mutate();
      const desired = world.registry();
      const reloadsBefore = sim.reloads;
      const ctxt = `seed ${seed} step ${step}`;
      let last: Plan;
      try {
        last = converge(sim, desired, rnd, hold, step % 3 === 0);
      } catch (e) {
        throw new Error(`${ctxt}: ${(e as Error).message}`, { cause: e });
      }
      if (membershipOnly) {
        membershipOnlySteps++;
        assert.equal(sim.reloads, reloadsBefore, `${ctxt}: a membership change caused a reload`);
      }
      overflowSeen += [...sim.backends.values()].filter((b) => b.servers.some((s) => s.dynamic)).length;

      // idempotence: the converged state re-plans to nothing, also after a restart
      const again = plan(desired, sim.observe(), sim.ctx({ holdUntilHealthy: hold, drainTimeoutMs: 2_000 }));
      assert.deepEqual(again.ops, [], `${ctxt}: re-plan`);
      assert.equal(again.reload, false, `${ctxt}: re-plan reload`);
      const restarted = plan(desired, sim.observe(), sim.ctx({ holdUntilHealthy: hold, drainStartedAt: new Map() }));
      assert.deepEqual(restarted.ops, [], `${ctxt}: after restart`);
      assert.deepEqual(restarted.reasons, again.reasons, `${ctxt}: same reasons after restart`);
      sim.assertMatches(desired);

      // the non-urgent reasons ride along with the next reload; after it, nothing at all
      if (last.reasons.length > 0 && rnd() < 0.5) {
        sim.reload(desired, last.capacity);
        converge(sim, desired, rnd, hold, false);
        const empty = plan(desired, sim.observe(), sim.ctx({ holdUntilHealthy: hold }));
        assert.deepEqual([empty.ops, empty.reasons], [[], []], `${ctxt}: after the ride-along reload`);
        sim.assertMatches(desired);
      }
    }
    assert.ok(membershipOnlySteps > 50, 'sequence exercised membership changes');
    assert.ok(overflowSeen > 0, 'sequence exercised overflow servers');
  });
}
