/**
 * The settings stamp: the first line of every haproxy.cfg the updater writes names a hash of
 * the render settings (flags) it was rendered with, so a restart with other flags — and
 * `plan` asked with other flags — sees that the running config is out of date.
 */
import { createHash } from 'node:crypto';
import type { RenderSettings } from '../render/index.js';

export function settingsHash(settings: RenderSettings): string {
  return createHash('sha256').update(JSON.stringify(settings)).digest('hex').slice(0, 16);
}

/** `config` with the stamp line for `settings` in front. */
export function stampConfig(config: string, settings: RenderSettings): string {
  return `# haproxy-updater settings ${settingsHash(settings)}\n${config}`;
}

/** The running config was rendered with other settings (or has no stamp: not ours, or none yet). */
export function settingsChanged(appliedConfig: string, settings: RenderSettings): boolean {
  const m = /^# haproxy-updater settings ([0-9a-f]+)$/m.exec(appliedConfig);
  return m?.[1] !== settingsHash(settings);
}
