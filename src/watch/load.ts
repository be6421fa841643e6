/**
 * The registry load: one paged range of the prefix at one revision. The watcher runs it on
 * every (re)connect before watching from revision+1; the one-shot commands (`render`,
 * `plan`, `status`) run the same load once and parse it the same way.
 */
import { Range, type Etcd3 } from 'etcd3';
import { createEtcdClient, type EtcdAuthOptions, type EtcdTlsOptions } from './client.js';
import { normalizePrefix, parseRegistry, type ParseResult } from './parse.js';

export interface Snapshot {
  kv: Map<string, string>;
  revision: string;
}

const utf8 = new TextDecoder('utf-8');

/** Range of `range`, `pageSize` keys a page, every page at the revision of the first. */
export async function loadRange(client: Etcd3, range: Range, pageSize: number): Promise<Snapshot> {
  const kv = new Map<string, string>();
  let key: Buffer | string = range.start;
  let revision: string | undefined;
  for (;;) {
    const res = await client.kv.range({ key, range_end: range.end, limit: pageSize, ...(revision ? { revision } : {}) });
    revision ??= res.header.revision;
    for (const item of res.kvs) kv.set(utf8.decode(item.key), utf8.decode(item.value));
    const last = res.kvs[res.kvs.length - 1];
    if (!res.more || !last) break;
    key = Buffer.concat([last.key, Buffer.from([0])]);
  }
  return { kv, revision };
}

export interface LoadOnceOptions {
  endpoints: string[];
  /** Registry prefix, e.g. `/haproxy-discover`. */
  prefix: string;
  tls?: EtcdTlsOptions;
  auth?: EtcdAuthOptions;
  /** Page size of the range. Default 1000 (as the watcher). */
  pageSize?: number;
}

/** Connects, loads the registry once (as the watcher does at start), parses it, closes. */
export async function loadRegistryOnce(opts: LoadOnceOptions): Promise<ParseResult> {
  const prefix = normalizePrefix(opts.prefix);
  const client = await createEtcdClient({ endpoints: opts.endpoints, tls: opts.tls, auth: opts.auth });
  try {
    const snap = await loadRange(client, Range.prefix(prefix + '/'), opts.pageSize ?? 1000);
    return parseRegistry([...snap.kv].map(([key, value]) => ({ key, value })), prefix, snap.revision);
  } finally {
    client.close();
  }
}
