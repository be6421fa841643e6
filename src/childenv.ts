/**
 * The environment of the processes the updater starts (HAProxy, `haproxy -c`, iptables).
 * HAProxy shows its environment to anyone on the admin socket (`show env`) and children
 * inherit it, so they get an allow-list, never the updater's own environment: that holds
 * HAPROXY_UPDATER_STATS_PASSWORD, HAPROXY_UPDATER_ETCD_PASSWORD and whatever else the
 * operator's container sets.
 */

/** Variables passed on when set: how to find binaries, and locale/time zone for messages and log timestamps. */
export const CHILD_ENV_ALLOW: readonly string[] = Object.freeze(['PATH', 'TZ', 'LANG', 'LC_ALL', 'LC_CTYPE', 'LC_MESSAGES']);

/** PATH when the updater has none (a bare container): where Debian puts haproxy and iptables. */
export const DEFAULT_CHILD_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** The allow-listed variables of `from` (default process.env); PATH always set. */
export function childEnv(from: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const name of CHILD_ENV_ALLOW) {
    const v = from[name];
    if (v !== undefined) env[name] = v;
  }
  env.PATH ??= DEFAULT_CHILD_PATH;
  return env;
}
