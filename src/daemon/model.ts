/**
 * What the daemon knows of HAProxy between full reads (issue #10 item 2): the last full
 * observation, with the maps kept up to date from the replies to the daemon's own map
 * commands and the backends its commands touched marked for a re-read. An incremental pass
 * reads only the backends in its scope (and those marked) and takes the rest from here:
 * which backends exist, their config structure, the maps. Any failed command, and every
 * reload, makes the next pass a full read again.
 */
import type { ObservedBackend, ObservedState } from '../reconcile/index.js';
import type { ApplyResult } from './apply.js';

export class HaproxyModel {
  #backends: Map<string, ObservedBackend> | null = null;
  #maps = { hosts: new Map<string, string>(), sni: new Map<string, string>() };
  /** Backends changed by our commands since they were last read. */
  readonly #stale = new Set<string>();

  /** False until a full read, and after anything that may have put it out of step. */
  get valid(): boolean {
    return this.#backends !== null;
  }

  /** A full read: the model is that observation. */
  replace(observed: ObservedState): void {
    this.#backends = new Map(observed.backends);
    this.#maps = { hosts: new Map(observed.hostsMap), sni: new Map(observed.sniMap) };
    this.#stale.clear();
  }

  invalidate(): void {
    this.#backends = null;
    this.#stale.clear();
  }

  /** Backends of `scope` that HAProxy runs, and those to re-read anyway: what an incremental pass reads. */
  toRead(scope: Iterable<string>): string[] {
    const b = this.#backends;
    if (!b) return [];
    return [...new Set([...scope, ...this.#stale])].filter((be) => b.has(be)).sort();
  }

  /** The backends HAProxy runs as last read, sorted; none before a full read. */
  backendNames(): string[] {
    return this.#backends ? [...this.#backends.keys()].sort() : [];
  }

  /** The config structure hash of a backend as last read. */
  structureHash(backend: string): string | null {
    return this.#backends?.get(backend)?.structureHash ?? null;
  }

  /** Fresh reads of some backends, the rest as known: what the planner gets in an incremental pass. */
  merge(fresh: ReadonlyMap<string, ObservedBackend>): ObservedState {
    if (!this.#backends) throw new Error('HAProxy model used before a full read');
    for (const [name, ob] of fresh) {
      this.#backends.set(name, ob);
      this.#stale.delete(name);
    }
    return { backends: new Map(this.#backends), hostsMap: new Map(this.#maps.hosts), sniMap: new Map(this.#maps.sni) };
  }

  /** The replies to our commands: map entries follow them; touched backends are re-read next time; a refusal invalidates. */
  record(results: readonly ApplyResult[]): void {
    for (const r of results) {
      if (!r.ok) {
        this.invalidate();
        return;
      }
      const op = r.op;
      if (op.kind === 'map-add' || op.kind === 'map-set') this.#maps[op.map].set(op.key, op.value);
      else if (op.kind === 'map-del') this.#maps[op.map].delete(op.key);
      else if (op.kind === 'del-backend') {
        // Gone from HAProxy: a service coming back under that name is a new backend (a full pass).
        this.#backends?.delete(op.backend);
        this.#stale.delete(op.backend);
      } else if ('backend' in op) this.#stale.add(op.backend);
    }
  }
}
