/**
 * `--admission probe|check|immediate` and its older alias `--hold-until-healthy`
 * (true = check, false = immediate). `--admission` wins when set; both set and disagreeing
 * is an error naming both, so a deployment never runs a mode nobody asked for.
 */
import { ConfigError } from '../errors.js';
import type { Flags } from '../config.js';

export type AdmissionMode = 'probe' | 'check' | 'immediate';
export const ADMISSION_MODES: readonly AdmissionMode[] = ['probe', 'check', 'immediate'];

export function admissionMode(f: Pick<Flags, 'isSet' | 'str' | 'bool'>): AdmissionMode {
  const mode = (f.str('admission') ?? 'probe') as AdmissionMode;
  if (!f.isSet('hold-until-healthy')) return mode;
  const alias: AdmissionMode = f.bool('hold-until-healthy') ? 'check' : 'immediate';
  if (!f.isSet('admission')) return alias;
  // `--hold-until-healthy` also fits `probe` (it holds too, then probes).
  const agrees = alias === 'immediate' ? mode === 'immediate' : mode !== 'immediate';
  if (!agrees) {
    throw new ConfigError(`--admission ${mode} contradicts --hold-until-healthy=${alias === 'check'} (its alias for --admission ${alias}); set only --admission`, {
      flag: 'admission',
      value: mode,
    });
  }
  return mode;
}

/** Probe and check both keep a new server DOWN until it is let in; only immediate does not. */
export function holdsNewServers(mode: AdmissionMode): boolean {
  return mode !== 'immediate';
}
