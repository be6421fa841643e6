/**
 * The Registry kept up to date key by key (issue #10 item 2): keys are grouped by service
 * (`http-services/<svc>`, `tcp-services/<svc>`; everything else in one group), and a build
 * re-parses only the groups whose keys changed since the last build, with the same
 * `parseRegistry` as a full parse. A service is parsed from its own keys only, so the result
 * equals a full parse of all keys (test/unit/watch-builder.test.ts checks that).
 */
import type { HttpService, Registry, Rejection, TcpService } from '../model.js';
import { normalizePrefix, parseRegistry, type ParseResult } from './parse.js';

export interface Built extends ParseResult {
  /** Services whose keys changed (`http/<name>`, `tcp/<name>`); null: all keys were replaced. */
  readonly changed: ReadonlySet<string> | null;
}

const GROUPS: Readonly<Record<string, string>> = { 'http-services': 'http', 'tcp-services': 'tcp' };
/** The group of keys outside any service. */
const OTHER = '';

export class RegistryBuilder {
  readonly #prefix: string;
  readonly #root: string;
  /** group → key → value */
  #groups = new Map<string, Map<string, string>>();
  /** group → its last parse */
  #parsed = new Map<string, ParseResult>();
  #dirty = new Set<string>();
  #all = true;
  #last: Registry | null = null;

  constructor(prefix: string) {
    this.#prefix = normalizePrefix(prefix);
    this.#root = this.#prefix + '/';
  }

  /** Replaces every key (a full load). */
  reset(kv: ReadonlyMap<string, string>): void {
    this.#groups = new Map();
    this.#parsed = new Map();
    this.#dirty.clear();
    this.#all = true;
    for (const [k, v] of kv) this.#groupOf(k, true)!.set(k, v);
  }

  set(key: string, value: string): void {
    this.#groupOf(key, true)!.set(key, value);
  }

  delete(key: string): void {
    this.#groupOf(key, false)?.delete(key);
  }

  /** The registry of all keys, re-parsing only the groups changed since the last build. */
  build(revision: string): Built {
    const all = this.#all || this.#last === null;
    const groups = all ? [...this.#groups.keys()] : [...this.#dirty];
    const changed = new Set<string>();
    let http: Map<string, HttpService>;
    let tcp: Map<string, TcpService>;
    if (all) {
      this.#parsed = new Map();
      http = new Map();
      tcp = new Map();
    } else {
      http = new Map(this.#last!.http);
      tcp = new Map(this.#last!.tcp);
    }
    let added = false;
    for (const g of groups) {
      const kv = this.#groups.get(g);
      const p = kv && kv.size > 0 ? parseRegistry(entries(kv), this.#prefix, revision) : null;
      const old = this.#parsed.get(g);
      if (old) {
        // Map.set on a kept name keeps its place; only names gone are deleted.
        for (const n of old.registry.http.keys()) if (!p?.registry.http.has(n)) http.delete(n);
        for (const n of old.registry.tcp.keys()) if (!p?.registry.tcp.has(n)) tcp.delete(n);
      }
      if (p === null) {
        this.#groups.delete(g);
        this.#parsed.delete(g);
      } else {
        this.#parsed.set(g, p);
        for (const [n, s] of p.registry.http) {
          if (!http.has(n)) added = true;
          http.set(n, s);
        }
        for (const [n, s] of p.registry.tcp) {
          if (!tcp.has(n)) added = true;
          tcp.set(n, s);
        }
      }
      const slash = g.indexOf('/');
      if (g !== OTHER) changed.add(`${GROUPS[g.slice(0, slash)]}/${g.slice(slash + 1)}`);
    }
    // A full parse lists services by name; keep that order (the config is rendered in it).
    if (added || all) {
      http = sortedMap(http);
      tcp = sortedMap(tcp);
    }
    const rejections: Rejection[] = [];
    const ignored: string[] = [];
    for (const p of this.#parsed.values()) {
      if (p.rejections.length) rejections.push(...p.rejections);
      if (p.ignored.length) ignored.push(...p.ignored);
    }
    rejections.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : a.reason < b.reason ? -1 : a.reason > b.reason ? 1 : 0));
    const registry: Registry = Object.freeze({ revision, http, tcp });
    this.#last = registry;
    this.#dirty.clear();
    this.#all = false;
    return { registry, rejections, ignored, changed: all ? null : changed };
  }

  #groupOf(key: string, create: boolean): Map<string, string> | undefined {
    let g = OTHER;
    if (key.startsWith(this.#root)) {
      const rest = key.slice(this.#root.length);
      const a = rest.indexOf('/');
      const b = a < 0 ? -1 : rest.indexOf('/', a + 1);
      const group = a < 0 ? '' : rest.slice(0, a);
      // `<group>/<svc>` needs a field after it; `<group>/<svc>` alone is no service key.
      if (group in GROUPS && b > a + 1) g = rest.slice(0, b);
    }
    this.#dirty.add(g);
    let m = this.#groups.get(g);
    if (!m && create) this.#groups.set(g, (m = new Map()));
    return m;
  }
}

function* entries(kv: ReadonlyMap<string, string>): Iterable<{ key: string; value: string }> {
  for (const [key, value] of kv) yield { key, value };
}

function sortedMap<T>(m: ReadonlyMap<string, T>): Map<string, T> {
  return new Map([...m].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}
