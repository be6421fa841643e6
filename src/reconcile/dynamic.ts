/**
 * Where a new or removed service goes: into the running HAProxy over the Runtime API
 * (3.4+: `add backend ... from <named defaults>`, `del backend`), or into the next reload.
 * Pure: a function of the service, the capability and what else the plan wants.
 *
 * A runtime-added backend has only what the named defaults section gives it, so a service
 * whose backend needs lines of its own (health check, another balance) or that the
 * frontends must know about (tcp ports, `url_reg`, passthrough) still costs a reload.
 */
import { DEFAULT_OPTIONS, DEFAULT_SERVICE, type Service } from '../model.js';

export type ServicePlacement =
  | { readonly kind: 'runtime' }
  | { readonly kind: 'reload'; readonly why: string };

export interface PlacementInput {
  /** Capability `dynamicBackends` of the running HAProxy (and the config has current settings). */
  readonly dynamicBackends: boolean;
  /** HAProxy refused the runtime creation of this backend since the last reload. */
  readonly refused: boolean;
  /** The plan already wants a reload now: the new backend rides along (and the config on disk stays the running one's). */
  readonly reloadAnyway: boolean;
}

/** Why the backend of `svc` needs config lines a runtime-added backend cannot have; null = none. */
export function runtimeAddProblem(svc: Service): string | null {
  if (svc.kind === 'tcp') return 'tcp service: its ports need a frontend';
  if (svc.name === DEFAULT_SERVICE) return 'the default service: the frontends name it in default_backend';
  if (svc.sslPassthrough) return 'sslpass: needs a tcp-mode backend and the SNI frontend';
  if (svc.urlReg !== null) return 'url_reg: needs a use_backend rule';
  if (svc.options.balance !== DEFAULT_OPTIONS.balance) return `balance ${svc.options.balance}: not the defaults' ${DEFAULT_OPTIONS.balance}`;
  if (svc.options.healthPath !== null) return 'healthPath: needs option httpchk';
  return null;
}

/** A new service: runtime `add backend`, or a reload (with the reason in words). */
export function placeNewService(svc: Service, i: PlacementInput): ServicePlacement {
  if (!i.dynamicBackends) return { kind: 'reload', why: 'running HAProxy cannot add backends at runtime' };
  if (i.refused) return { kind: 'reload', why: 'runtime add was refused' };
  if (i.reloadAnyway) return { kind: 'reload', why: 'a reload is needed anyway' };
  const problem = runtimeAddProblem(svc);
  return problem === null ? { kind: 'runtime' } : { kind: 'reload', why: problem };
}

/**
 * A removed service's backend: `unpublish`/`del backend` at runtime, or dropped at the next
 * reload when the running config names it in a rule (`default_backend` of the default
 * service or a tcp frontend, `use_backend ... if url_reg`): that rule goes only with a reload.
 */
export function placeRemovedService(
  backend: string,
  i: Omit<PlacementInput, 'refused'> & { readonly staticRefs: ReadonlySet<string> },
): ServicePlacement['kind'] {
  return i.dynamicBackends && !i.reloadAnyway && !i.staticRefs.has(backend) ? 'runtime' : 'reload';
}
