/**
 * Reload guards. `none` relies on master-worker listener passing (the new worker inherits
 * the listening sockets, so no SYN meets a closed port). `iptables` is the seed's method
 * (Yelp's "true zero downtime reloads"): drop new SYNs to the frontend ports while the
 * reload runs; clients retransmit the SYN (after ~1 s on Linux) and get the new worker.
 * It costs a second of latency to connections that arrive during the reload, never an error.
 *
 * Rules are tagged with an iptables comment so they can always be found and removed,
 * also after a crash: init() of either guard removes leftovers from iptables and ip6tables.
 * With `ipv6` (IPv6 or dual-stack listeners) the SYN drop goes into ip6tables as well.
 */
import { execFile } from 'node:child_process';
import { unlink, writeFile, access } from 'node:fs/promises';
import { GuardError, InvalidArgumentError } from '../errors.js';
import { logger } from '../log.js';
import { assertPort } from '../render/safe.js';
import { childEnv } from '../childenv.js';

const log = logger('guard');

export type GuardKind = 'iptables' | 'none';

export interface ReloadGuard {
  readonly kind: GuardKind;
  /** At start: check the guard is usable (GuardError if not) and remove stale rules. */
  init(): Promise<void>;
  /** Hold new connections to `ports` off while the reload runs. */
  engage(ports: number[]): Promise<void>;
  /** Remove the hold. Always safe to call, also when nothing is engaged. */
  release(): Promise<void>;
}

/**
 * No guard during reloads. init() still removes tagged rules a crashed run of the iptables
 * guard left behind (the mode may have changed since, and such a rule drops every new
 * connection), best effort: no iptables or no permission is not an error here. With a
 * `markerPath`, only when the marker says a guard was engaged and never released: an
 * updater that never guarded does not touch the firewall at all.
 */
export class NoGuard implements ReloadGuard {
  readonly kind = 'none' as const;
  readonly #opts: IptablesGuardOptions;
  constructor(opts: IptablesGuardOptions = {}) {
    this.#opts = opts;
  }
  async init(): Promise<void> {
    const marker = this.#opts.markerPath;
    if (marker && !(await exists(marker))) return;
    await removeStaleGuardRules(this.#opts);
    if (marker) await unlink(marker).catch(() => undefined);
  }
  async engage(_ports: number[]): Promise<void> {}
  async release(): Promise<void> {}
}

export interface IptablesGuardOptions {
  /** iptables executable. Default `iptables`. */
  iptables?: string;
  /** ip6tables executable. Default `iptables` with `ip6tables` for its last word (`ip6tables`). */
  ip6tables?: string;
  /**
   * Guard IPv6 too (ip6tables), for dual-stack or IPv6 listeners. Default false. Stale
   * tagged rules are removed from both tables at init whatever this says.
   */
  ipv6?: boolean;
  /** Environment of the iptables processes. Default childEnv() (no secrets). */
  env?: NodeJS.ProcessEnv;
  /** Network namespace to act in (`ip netns exec <ns> iptables ...`); null = the current one. Default null. */
  netns?: string | null;
  /** `ip` executable (for `netns`). Default `ip`. */
  ip?: string;
  /** Comment that tags our rules. Default `haproxy-updater-guard`. */
  tag?: string;
  /** Chain the SYN-drop rules go to (inserted first). Default `INPUT`. */
  chain?: string;
  /** Per iptables call. Default 10000 ms (`-w` waits for the xtables lock). */
  timeoutMs?: number;
  /**
   * File that exists while rules may be engaged (written before the first rule goes in,
   * removed once they are out), so a later start in any guard mode knows a crash left
   * some. Default none: guard `none` then always checks.
   */
  markerPath?: string;
}

const WORD_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
/** iptables multiport takes at most 15 ports per rule. */
const MULTIPORT_MAX = 15;

export class IptablesGuard implements ReloadGuard {
  readonly kind = 'iptables' as const;
  readonly #iptables: string;
  readonly #ip6tables: string;
  readonly #ipv6: boolean;
  readonly #env: NodeJS.ProcessEnv;
  readonly #prefix: string[];
  readonly #tag: string;
  readonly #chain: string;
  readonly #timeoutMs: number;
  readonly #marker: string | null;

  constructor(opts: IptablesGuardOptions = {}) {
    this.#iptables = opts.iptables ?? 'iptables';
    // Beside a given iptables (a test's fake, a non-standard path), not the one on PATH.
    this.#ip6tables = opts.ip6tables ?? this.#iptables.replace(/iptables$/, 'ip6tables');
    this.#ipv6 = opts.ipv6 ?? false;
    this.#env = opts.env ?? childEnv();
    this.#tag = opts.tag ?? 'haproxy-updater-guard';
    this.#chain = opts.chain ?? 'INPUT';
    this.#timeoutMs = opts.timeoutMs ?? 10_000;
    this.#marker = opts.markerPath ?? null;
    for (const [what, v] of [['tag', this.#tag], ['chain', this.#chain]] as const) {
      if (!WORD_RE.test(v)) throw new InvalidArgumentError(`iptables guard ${what} ${JSON.stringify(v)} must match ${WORD_RE}`, { what });
    }
    const ns = opts.netns ?? null;
    if (ns !== null && !WORD_RE.test(ns)) throw new InvalidArgumentError(`netns ${JSON.stringify(ns)} must match ${WORD_RE}`, { what: 'netns' });
    this.#prefix = ns === null ? [] : [opts.ip ?? 'ip', 'netns', 'exec', ns];
  }

  get tag(): string {
    return this.#tag;
  }

  async init(): Promise<void> {
    for (const family of this.#families()) {
      try {
        await this.#run(family, ['-w', '-S', this.#chain]);
      } catch (err) {
        const bin = family === 'ipv6' ? this.#ip6tables : this.#iptables;
        const problem = usabilityProblem(err);
        if (problem === 'absent') {
          throw new GuardError(`reload guard iptables: '${this.#prefix[0] ?? bin}' not found; install iptables or use --reload-guard none`, { family }, { cause: err });
        }
        if (problem === 'denied') {
          throw new GuardError('reload guard iptables: no permission (needs root or CAP_NET_ADMIN); use --reload-guard none', { family }, { cause: err });
        }
        const e = err as { stderr?: string; message?: string };
        throw new GuardError(`reload guard iptables unusable (${bin}): ${`${e.stderr ?? ''} ${e.message ?? ''}`.trim()}`, { family }, { cause: err });
      }
    }
    await this.removeStale(this.#ipv6 ? [] : ['ipv6']);
    if (this.#marker) await unlink(this.#marker).catch(() => undefined);
  }

  /**
   * Removes tagged rules of both families (a crash can leave either behind, whatever this
   * run guards). `tolerate`: families whose table may be missing or forbidden (skipped).
   * Returns how many rules went.
   */
  async removeStale(tolerate: readonly Family[] = FAMILIES): Promise<number> {
    let removed = 0;
    for (const family of FAMILIES) {
      try {
        removed += await this.#removeTagged(family);
      } catch (err) {
        if (!tolerate.includes(family) || usabilityProblem(err) === null) throw err;
        log.debug({ family, err: (err as Error).message }, 'no tagged reload-guard rules checked: iptables absent or not permitted');
      }
    }
    if (removed > 0) log.warn({ removed, tag: this.#tag }, 'removed reload-guard rules left behind by an earlier run');
    return removed;
  }

  async engage(ports: number[]): Promise<void> {
    const unique = [...new Set(ports.map((p) => assertPort(p, 'guard port')))].sort((a, b) => a - b);
    if (unique.length === 0) return;
    try {
      if (this.#marker) await writeFile(this.#marker, `${process.pid}\n`, { mode: 0o600 });
      for (const family of this.#families()) {
        for (let i = 0; i < unique.length; i += MULTIPORT_MAX) {
          const chunk = unique.slice(i, i + MULTIPORT_MAX).join(',');
          await this.#run(family, ['-w', '-I', this.#chain, '-p', 'tcp', '-m', 'multiport', '--dports', chunk, '--syn', '-m', 'comment', '--comment', this.#tag, '-j', 'DROP']);
        }
      }
    } catch (err) {
      // Never leave half a guard behind.
      await this.release().catch(() => undefined);
      throw new GuardError(`could not engage the iptables reload guard: ${(err as Error).message}`, { ports: unique }, { cause: err });
    }
  }

  async release(): Promise<void> {
    try {
      for (const family of this.#families()) await this.#removeTagged(family);
      if (this.#marker) await unlink(this.#marker).catch(() => undefined);
    } catch (err) {
      throw new GuardError(`could not remove the iptables reload guard (tag ${this.#tag}): ${(err as Error).message}`, { tag: this.#tag }, { cause: err });
    }
  }

  #families(): Family[] {
    return this.#ipv6 ? ['ipv4', 'ipv6'] : ['ipv4'];
  }

  /** Deletes every rule of the chain carrying our tag, by its exact spec from `-S`. */
  async #removeTagged(family: Family): Promise<number> {
    let removed = 0;
    for (let round = 0; round < 1000; round++) {
      const listing = await this.#run(family, ['-w', '-S', this.#chain]);
      const specs = listing
        .split('\n')
        .map((l) => l.trim().split(/\s+/))
        .filter((w) => w[0] === '-A' && w.some((x, i) => x === '--comment' && w[i + 1] === this.#tag));
      if (specs.length === 0) return removed;
      for (const words of specs) {
        // `-A INPUT ...` → `-D INPUT ...`: deletion by spec cannot hit a rule someone
        // inserted meanwhile (a rule number could).
        await this.#run(family, ['-w', '-D', ...words.slice(1)]);
        removed++;
      }
    }
    throw new Error('tagged rules keep coming back');
  }

  #run(family: Family, args: string[]): Promise<string> {
    const argv = [...this.#prefix, family === 'ipv6' ? this.#ip6tables : this.#iptables, ...args];
    const [cmd, ...rest] = argv as [string, ...string[]];
    return new Promise((resolve, reject) => {
      execFile(cmd, rest, { env: this.#env, timeout: this.#timeoutMs, encoding: 'utf8' }, (err, stdout, stderr) => {
        if (!err) return resolve(stdout);
        const e = err as NodeJS.ErrnoException;
        reject(
          Object.assign(new Error(`${argv.join(' ')}: ${stderr.trim() || e.message}`), {
            errno: typeof e.code === 'string' ? e.code : undefined,
            stderr,
          }),
        );
      });
    });
  }
}

async function exists(p: string): Promise<boolean> {
  return access(p).then(
    () => true,
    () => false,
  );
}

type Family = 'ipv4' | 'ipv6';
const FAMILIES: readonly Family[] = ['ipv4', 'ipv6'];

/** 'absent' (no binary; in a netns `ip netns exec` says so on stderr), 'denied', or null (another failure). */
function usabilityProblem(err: unknown): 'absent' | 'denied' | null {
  const e = err as { errno?: string; stderr?: string; message?: string };
  const text = `${e.stderr ?? ''} ${e.message ?? ''}`;
  if (e.errno === 'ENOENT' || /No such file or directory|command not found/i.test(text)) return 'absent';
  if (/permission denied|must be root|Operation not permitted/i.test(text)) return 'denied';
  return null;
}

/**
 * At start, whatever the guard mode: removes tagged rules (iptables and ip6tables) that a
 * crash during a guarded reload left behind. Best effort: a missing iptables or missing
 * permission only means there is nothing we could have left.
 */
export async function removeStaleGuardRules(opts: IptablesGuardOptions = {}): Promise<number> {
  try {
    return await new IptablesGuard(opts).removeStale();
  } catch (err) {
    log.warn({ err }, 'could not check for reload-guard rules left behind by an earlier run');
    return 0;
  }
}

export interface GuardOptions extends IptablesGuardOptions {}

export function createGuard(kind: GuardKind | string, opts: GuardOptions = {}): ReloadGuard {
  if (kind === 'none') return new NoGuard(opts);
  if (kind === 'iptables') return new IptablesGuard(opts);
  throw new InvalidArgumentError(`unknown reload guard ${JSON.stringify(kind)} (iptables|none)`, { kind });
}
