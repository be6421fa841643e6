/**
 * The reload decision. Pure: one function of the plan, the settings, the clock values the
 * daemon keeps (deferral start, rate limit), the last refused config and the last config
 * the master failed to load (retried with exponential backoff, not every pass). The daemon pass
 * reads as observe → plan → decide → execute; nothing else decides about reloads.
 *
 * | wanted because                                   | rate limit open | refused before | decision        |
 * |--------------------------------------------------|-----------------|----------------|-----------------|
 * | nothing (no reasons, same settings)              | –               | –              | none/not-needed |
 * | only non-urgent reasons, waited < consolidate    | –               | –              | none/deferred   |
 * | urgent reason, settings changed, or non-urgent   | no              | –              | later (N ms)    |
 * |   reasons waited ≥ consolidateAfterMs            | yes             | same config    | none/refused    |
 * |                                                  | yes             | same config failed at the master, backoff running | later (backoff) |
 * |                                                  | yes             | no             | now             |
 */
import { backoffDelay } from '../backoff.js';
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
  /** The last config the master failed to load (reload failed, rolled back); null = none. */
  readonly failed?: FailedReload | null;
  /** Identity of the config a reload now would write. Asked only when a reload would go ahead now (rendering is not free). */
  readonly desiredConfig: () => string;
}

/** A config the master failed to load: not tried again before `retryAt` unless the config changes. */
export interface FailedReload {
  /** Identity of the config (as `desiredConfig` returns it). */
  readonly config: string;
  /** Consecutive failed reloads (any config), 1 after the first. */
  readonly attempts: number;
  /** ms since epoch. */
  readonly retryAt: number;
  /** The last failure, for logs and /readyz. */
  readonly message: string;
}

/** Backoff of failed reloads: from `initialMs` doubling per consecutive failure, up to `maxMs`. */
export interface FailedReloadBackoff {
  /** Default 2000 ms. */
  readonly initialMs?: number;
  /** Default 300000 ms (5 min). */
  readonly maxMs?: number;
}

/** The memory after one more failed reload of `config` at `now`. */
export function recordFailedReload(prev: FailedReload | null, config: string, message: string, now: number, opts: FailedReloadBackoff = {}): FailedReload {
  const attempts = (prev?.attempts ?? 0) + 1;
  const delay = backoffDelay(attempts - 1, { initialMs: opts.initialMs ?? 2000, maxMs: opts.maxMs ?? 300_000 });
  return Object.freeze({ config, attempts, retryAt: now + delay, message });
}

export type ReloadDecision =
  | { readonly action: 'none'; readonly why: 'not-needed' | 'deferred'; readonly reasons: readonly ReloadCause[] }
  /** The same config was refused before: do not try again until the registry changes it. */
  | { readonly action: 'none'; readonly why: 'refused'; readonly reasons: readonly ReloadCause[]; readonly config: string }
  /** `backoff`: the same config failed at the master and its backoff is still running. */
  | { readonly action: 'later'; readonly afterMs: number; readonly reasons: readonly ReloadCause[]; readonly backoff?: true }
  | { readonly action: 'now'; readonly reasons: readonly ReloadCause[]; readonly config: string };

export interface DecideResult {
  readonly decision: ReloadDecision;
  /** The daemon's next `deferredSince`. */
  readonly deferredSince: number;
  /** The daemon's next `refusedConfig` (cleared once nothing asks for a reload any more). */
  readonly refusedConfig: string | null;
  /** The daemon's next failed-reload memory (cleared once nothing asks for a reload any more). */
  readonly failed: FailedReload | null;
}

export function decideReload(i: DecideInput): DecideResult {
  const reasons: ReloadCause[] = [...i.plan.reasons, ...(i.settingsChanged ? [SETTINGS_REASON] : [])];
  const consolidate = i.consolidateAfterMs > 0 && i.plan.reasons.length > 0 && i.deferredSince > 0 && i.now - i.deferredSince >= i.consolidateAfterMs;
  // The registry no longer asks for the refused structure: nothing is refused any more.
  const wanted = i.plan.reload || i.settingsChanged;
  const refusedConfig = wanted ? i.refusedConfig : null;
  const failed = wanted ? (i.failed ?? null) : null;
  const deferredSince = i.plan.reasons.length === 0 ? 0 : i.deferredSince || i.now;
  const next = (decision: ReloadDecision): DecideResult => ({ decision, deferredSince, refusedConfig, failed });

  if (!(i.plan.reload || i.settingsChanged || consolidate)) {
    return next({ action: 'none', why: reasons.length ? 'deferred' : 'not-needed', reasons });
  }
  if (i.nextAllowedAt > i.now) return next({ action: 'later', afterMs: i.nextAllowedAt - i.now, reasons });
  const config = i.desiredConfig();
  if (config === refusedConfig) return next({ action: 'none', why: 'refused', reasons, config });
  // A new config may be the fix: tried at once. The same one waits out its backoff.
  if (failed && failed.config === config && failed.retryAt > i.now) return next({ action: 'later', afterMs: failed.retryAt - i.now, reasons, backoff: true });
  return next({ action: 'now', reasons, config });
}
