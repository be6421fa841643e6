/**
 * The reload decision. Pure: one function of the plan, the settings, the clock values the
 * daemon keeps (deferral start, rate limit) and the last refused config. The daemon pass
 * reads as observe → plan → decide → execute; nothing else decides about reloads.
 *
 * | wanted because                                   | rate limit open | refused before | decision        |
 * |--------------------------------------------------|-----------------|----------------|-----------------|
 * | nothing (no reasons, same settings)              | –               | –              | none/not-needed |
 * | only non-urgent reasons, waited < consolidate    | –               | –              | none/deferred   |
 * | urgent reason, settings changed, or non-urgent   | no              | –              | later (N ms)    |
 * |   reasons waited ≥ consolidateAfterMs            | yes             | same config    | none/refused    |
 * |                                                  | yes             | no             | now             |
 */
import type { Plan, ReloadReason } from './types.js';

/** The daemon's render settings (flags) differ from those the running config was rendered with. */
export interface SettingsReason {
  readonly kind: 'settings';
  readonly backend: null;
  readonly detail: string;
  readonly urgent: true;
}

/** Why a reload happens: a planner reason or a settings change. Typed up to the metric label (`kind`). */
export type ReloadCause = ReloadReason | SettingsReason;
export type ReloadCauseKind = ReloadCause['kind'];

export const SETTINGS_REASON: SettingsReason = Object.freeze({
  kind: 'settings',
  backend: null,
  detail: 'render settings (flags) changed since the running config was rendered',
  urgent: true,
});

export interface DecideInput {
  readonly plan: Pick<Plan, 'reasons' | 'reload'>;
  /** The running config was rendered with other settings than the daemon has now. */
  readonly settingsChanged: boolean;
  readonly now: number;
  /** Since when non-urgent reasons have been waiting; 0 = none waiting. */
  readonly deferredSince: number;
  /** Reload for waiting non-urgent reasons once they have waited this long; 0 = only with an urgent one. */
  readonly consolidateAfterMs: number;
  /** Earliest time the rate limit lets the next reload start (≤ now: open). */
  readonly nextAllowedAt: number;
  /** Identity of the last config `haproxy -c` refused; null = none refused. */
  readonly refusedConfig: string | null;
  /** Identity of the config a reload now would write. Asked only when a reload would go ahead now (rendering is not free). */
  readonly desiredConfig: () => string;
}

export type ReloadDecision =
  | { readonly action: 'none'; readonly why: 'not-needed' | 'deferred'; readonly reasons: readonly ReloadCause[] }
  /** The same config was refused before: do not try again until the registry changes it. */
  | { readonly action: 'none'; readonly why: 'refused'; readonly reasons: readonly ReloadCause[]; readonly config: string }
  | { readonly action: 'later'; readonly afterMs: number; readonly reasons: readonly ReloadCause[] }
  | { readonly action: 'now'; readonly reasons: readonly ReloadCause[]; readonly config: string };

export interface DecideResult {
  readonly decision: ReloadDecision;
  /** The daemon's next `deferredSince`. */
  readonly deferredSince: number;
  /** The daemon's next `refusedConfig` (cleared once nothing asks for a reload any more). */
  readonly refusedConfig: string | null;
}

export function decideReload(i: DecideInput): DecideResult {
  const reasons: ReloadCause[] = [...i.plan.reasons, ...(i.settingsChanged ? [SETTINGS_REASON] : [])];
  const consolidate = i.consolidateAfterMs > 0 && i.plan.reasons.length > 0 && i.deferredSince > 0 && i.now - i.deferredSince >= i.consolidateAfterMs;
  // The registry no longer asks for the refused structure: nothing is refused any more.
  const refusedConfig = !i.plan.reload && !i.settingsChanged ? null : i.refusedConfig;
  const deferredSince = i.plan.reasons.length === 0 ? 0 : i.deferredSince || i.now;
  const next = (decision: ReloadDecision): DecideResult => ({ decision, deferredSince, refusedConfig });

  if (!(i.plan.reload || i.settingsChanged || consolidate)) {
    return next({ action: 'none', why: reasons.length ? 'deferred' : 'not-needed', reasons });
  }
  if (i.nextAllowedAt > i.now) return next({ action: 'later', afterMs: i.nextAllowedAt - i.now, reasons });
  const config = i.desiredConfig();
  if (config === refusedConfig) return next({ action: 'none', why: 'refused', reasons, config });
  return next({ action: 'now', reasons, config });
}
