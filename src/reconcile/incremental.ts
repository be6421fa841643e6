/**
 * Incremental passes (issue #10 item 2). Pure. A registry change plans only the backends of
 * the services that changed (`ctx.scope`, see plan.ts); whatever goes beyond membership
 * and routing of those backends — a reload reason, a backend added or removed at runtime —
 * is left to a full pass, which sees every backend and decides about reloads as always.
 */
import { backendName, type Registry, type Service } from '../model.js';
import { plan } from './plan.js';
import type { ObservedState, OpKind, Plan, PlanContext } from './types.js';

/** Ops that change the set of backends: their placement and reload decisions need the whole picture. */
const BACKEND_OPS: ReadonlySet<OpKind> = new Set<OpKind>(['add-backend', 'publish-backend', 'unpublish-backend', 'del-backend']);

/**
 * The plan of the backends in `scope`, or null when the change needs a full pass (a reload
 * reason of any kind, or a backend-level op). `observed` must hold fresh state for the
 * backends in scope and the current maps; other backends only need to be present.
 */
export function planScoped(desired: Registry, observed: ObservedState, ctx: PlanContext & { scope: ReadonlySet<string> }): Plan | null {
  const p = plan(desired, observed, ctx);
  if (p.reasons.length > 0 || p.ops.some((o) => BACKEND_OPS.has(o.kind))) return null;
  return p;
}

/**
 * Backend names touched by changed services (`http/<name>`, `tcp/<name>`, as the watcher
 * reports them): the backend before and after the change (sslpass moves an http service
 * between `http-` and `tls-`), so a removed or renamed backend is in scope too.
 */
export function changedBackends(before: Registry | null, after: Registry, services: Iterable<string>): Set<string> {
  const out = new Set<string>();
  const lookup = (r: Registry | null, kind: string, name: string): Service | undefined =>
    r === null ? undefined : kind === 'http' ? r.http.get(name) : kind === 'tcp' ? r.tcp.get(name) : undefined;
  for (const id of services) {
    const slash = id.indexOf('/');
    const kind = id.slice(0, slash);
    const name = id.slice(slash + 1);
    for (const svc of [lookup(before, kind, name), lookup(after, kind, name)]) if (svc) out.add(backendName(svc));
  }
  return out;
}
