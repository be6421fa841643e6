/**
 * The Registry kept up to date key by key (issue #10 item 2): keys are grouped by service
 * (`http-services/<svc>`, `tcp-services/<svc>`; everything else in one group), and a build
 * re-parses only the groups whose keys changed since the last build, with the same
 * `parseRegistry` as a full parse. A service is parsed from its own keys only, so the result
 * equals a full parse of all keys (test/unit/watch-builder.test.ts checks that). Claims on
 * shared domains and tcp ports are the one cross-service rule: they are settled over all
 * services on every build (parse.ts settleClaims, cheap), and a service whose settled
 * domains or ports moved because another one changed counts as changed too.
 */
import type { HttpService, Registry, Rejection, TcpService } from '../model.js';
import { isClaimKey, normalizePrefix, parseRegistry, settleClaims, type ParseOptions, type ParseResult, type RegistryKv } from './parse.js';

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
  readonly #opts: ParseOptions;
  /** create_revision of the claim keys (isClaimKey): the first claimant keeps a domain or port. */
  #created = new Map<string, string>();
  /** Services as parsed from their own keys, before claims are settled. */
  #ownHttp = new Map<string, HttpService>();
  #ownTcp = new Map<string, TcpService>();
  /** group → key → value */
  #groups = new Map<string, Map<string, string>>();
  /** group → its last parse */
  #parsed = new Map<string, ParseResult>();
  #dirty = new Set<string>();
  #all = true;
  #last: Registry | null = null;

  constructor(prefix: string, opts: ParseOptions = {}) {
    this.#prefix = normalizePrefix(prefix);
    this.#root = this.#prefix + '/';
    this.#opts = opts;
  }

  /** Replaces every key (a full load); `created`: create_revision of the claim keys. */
  reset(kv: ReadonlyMap<string, string>, created: ReadonlyMap<string, string> = new Map()): void {
    this.#created = new Map(created);
    this.#groups = new Map();
    this.#parsed = new Map();
    this.#dirty.clear();
    this.#all = true;
    for (const [k, v] of kv) this.#groupOf(k, true)!.set(k, v);
  }

  set(key: string, value: string, createRevision?: string): void {
    this.#groupOf(key, true)!.set(key, value);
    if (isClaimKey(key)) {
      if (createRevision !== undefined) this.#created.set(key, createRevision);
      else this.#created.delete(key);
    }
  }

  delete(key: string): void {
    this.#groupOf(key, false)?.delete(key);
    this.#created.delete(key);
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
      http = this.#ownHttp;
      tcp = this.#ownTcp;
    }
    let added = false;
    for (const g of groups) {
      const kv = this.#groups.get(g);
      const p = kv && kv.size > 0 ? parseRegistry(this.#entries(kv), this.#prefix, revision, this.#opts) : null;
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
    this.#ownHttp = http;
    this.#ownTcp = tcp;
    const settledHttp = new Map(http);
    const settledTcp = new Map(tcp);
    const rejections: Rejection[] = settleClaims(settledHttp, settledTcp, (kind, name) => this.#claimKv(kind, name));
    if (!all) {
      // A claim settled differently (a winner left, a new first claimant) changes a service whose keys did not.
      const last = this.#last!;
      for (const [n, s] of settledHttp) if (!changed.has(`http/${n}`) && !sameList(s.domains, last.http.get(n)?.domains)) changed.add(`http/${n}`);
      for (const [n, s] of settledTcp) if (!changed.has(`tcp/${n}`) && !sameList(s.ports, last.tcp.get(n)?.ports)) changed.add(`tcp/${n}`);
    }
    const ignored: string[] = [];
    for (const p of this.#parsed.values()) {
      if (p.rejections.length) rejections.push(...p.rejections);
      if (p.ignored.length) ignored.push(...p.ignored);
    }
    rejections.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : a.reason < b.reason ? -1 : a.reason > b.reason ? 1 : 0));
    const registry: Registry = Object.freeze({ revision, http: settledHttp, tcp: settledTcp });
    this.#last = registry;
    this.#dirty.clear();
    this.#all = false;
    return { registry, rejections, ignored, changed: all ? null : changed };
  }

  *#entries(kv: ReadonlyMap<string, string>): Iterable<RegistryKv> {
    for (const [key, value] of kv) yield { key, value, createRevision: this.#created.get(key) };
  }

  #claimKv(kind: 'http' | 'tcp', name: string): RegistryKv | undefined {
    const key = `${this.#root}${kind}-services/${name}/${kind === 'http' ? 'domain' : 'ports'}`;
    const value = this.#groups.get(`${kind}-services/${name}`)?.get(key);
    return value === undefined ? undefined : { key, value, createRevision: this.#created.get(key) };
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

function sameList<T>(a: readonly T[], b: readonly T[] | undefined): boolean {
  return b !== undefined && a.length === b.length && a.every((x, i) => x === b[i]);
}

function sortedMap<T>(m: ReadonlyMap<string, T>): Map<string, T> {
  return new Map([...m].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}
