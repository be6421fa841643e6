/**
 * The one table that maps a running HAProxy's version (`show info` → `Version:`) to what
 * the updater may rely on. Nothing else in the code looks at version strings: callers ask
 * for a capability. A version the table does not know gets the most conservative set (the
 * 2.6 behaviour: poll `show proc` after a reload, reload for everything structural).
 *
 * Sources: tried on Debian's 2.6.12, 3.0.11, 3.2.26 and 3.4.7 (fixtures under
 * test/fixtures/runtime/versions/), plus doc/management.txt of each branch (2.8 rows: read).
 */

export interface HaproxyVersion {
  major: number;
  minor: number;
  /** null for `3.3-dev5` and the like. */
  patch: number | null;
  /** As HAProxy printed it, e.g. `3.0.11-1+deb13u4`. */
  raw: string;
}

export interface Capabilities {
  /** Master CLI `reload` answers `Success=1|0`, `--` and the start-up log once the reload is decided (2.8+). */
  readonly syncReload: boolean;
  /** `wait <ms> srv-removable <be>/<srv>` before `del server` (3.0+). */
  readonly waitSrvRemovable: boolean;
  /** `add backend <be> from <defaults>`, `publish`/`unpublish`/`del backend` (3.4+). */
  readonly dynamicBackends: boolean;
  /** `mworker-max-reloads` when the config sets none (3.3+: 50; before: unlimited = null). */
  readonly mworkerMaxReloadsDefault: number | null;
}

export interface VersionCapabilities {
  version: HaproxyVersion | null;
  /** Branch row of the table that applied (`3.2`), or null when the version is unknown. */
  branch: string | null;
  capabilities: Capabilities;
  /** Stable short form for logs and the metric label, e.g. `sync-reload,wait-srv-removable`. */
  label: string;
}

/** 2.6's behaviour, also what an unknown version gets. */
export const CONSERVATIVE: Capabilities = Object.freeze({
  syncReload: false,
  waitSrvRemovable: false,
  dynamicBackends: false,
  // An unknown newer branch may cap old workers: assume the cap exists.
  mworkerMaxReloadsDefault: 50,
});

/** Branches the project knows (LTS from 2.6), oldest first. */
const TABLE: ReadonlyArray<{ branch: string; caps: Capabilities }> = [
  { branch: '2.6', caps: { ...CONSERVATIVE, mworkerMaxReloadsDefault: null } },
  { branch: '2.8', caps: { ...CONSERVATIVE, mworkerMaxReloadsDefault: null, syncReload: true } },
  { branch: '3.0', caps: { ...CONSERVATIVE, mworkerMaxReloadsDefault: null, syncReload: true, waitSrvRemovable: true } },
  { branch: '3.2', caps: { ...CONSERVATIVE, mworkerMaxReloadsDefault: null, syncReload: true, waitSrvRemovable: true } },
  {
    branch: '3.4',
    caps: { syncReload: true, waitSrvRemovable: true, dynamicBackends: true, mworkerMaxReloadsDefault: 50 },
  },
];

/** The branches of the table, oldest first (the README's "Supported versions" rows come from CI, not from here). */
export const KNOWN_BRANCHES: readonly string[] = TABLE.map((r) => r.branch);

/** `3.0.11-1+deb13u4`, `2.6.12`, `3.3-dev5` → parts; null when it does not start with `<major>.<minor>`. */
export function parseHaproxyVersion(raw: string): HaproxyVersion | null {
  const m = /^(\d{1,3})\.(\d{1,3})(?:\.(\d{1,4}))?(?![\d.])/.exec(raw.trim());
  if (!m) return null;
  return { major: Number(m[1]), minor: Number(m[2]), patch: m[3] === undefined ? null : Number(m[3]), raw: raw.trim() };
}

/** `haproxy -v` output (`HAProxy version 3.2.26-1 2026/10/14 - https://haproxy.org/`) → the version string. */
export function versionFromHaproxyV(text: string): string | null {
  const m = /^HA-?Proxy version (\S+)/m.exec(text);
  return m?.[1] ?? null;
}

export function capabilityLabel(c: Capabilities): string {
  const parts: string[] = [];
  if (c.syncReload) parts.push('sync-reload');
  if (c.waitSrvRemovable) parts.push('wait-srv-removable');
  if (c.dynamicBackends) parts.push('dynamic-backends');
  parts.push(`max-reloads-${c.mworkerMaxReloadsDefault ?? 'unlimited'}`);
  return parts.join(',');
}

/** Capabilities of the running version (the `Version:` of `show info`). Never throws. */
export function capabilitiesFor(rawVersion: string | null | undefined): VersionCapabilities {
  const version = rawVersion ? parseHaproxyVersion(rawVersion) : null;
  const row = version ? TABLE.find((r) => r.branch === `${version.major}.${version.minor}`) : undefined;
  const capabilities = row?.caps ?? CONSERVATIVE;
  return { version, branch: row?.branch ?? null, capabilities, label: capabilityLabel(capabilities) };
}

/**
 * Whether the updater's own `haproxy -c` runs before a reload. Managed: the local binary is
 * the one running. External against a master whose `reload` is synchronous (2.8+): that
 * HAProxy refuses a bad config itself and keeps its workers, so a local binary of another
 * version (validator skew: accepting what the running one refuses, or the reverse) is used
 * only when its `haproxy -v` equals the running version. Without a synchronous reload only
 * `haproxy -c` can say why a config is bad, so it always runs.
 */
export function localCheckFirst(mode: 'managed' | 'external', running: VersionCapabilities, localVersion: string | null): boolean {
  if (mode === 'managed' || !running.capabilities.syncReload) return true;
  return localVersion !== null && localVersion === running.version?.raw;
}
