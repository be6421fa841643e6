/** `npm run demo -- …` arguments. */

export interface Options {
  /** Length of the traffic phase, s. Default 60 (--short: 20). */
  durationS: number;
  /** Leave the stack running afterwards. Default false. */
  keep: boolean;
  /** How long --keep keeps it at most, s. 3600. */
  keepMaxS: number;
  short: boolean;
  /** How long etcd stays down in step 6, ms; null: 6000 (--short 3000). */
  outageMs: number | null;
  /** --haproxy-bin: the HAProxy executable (sets HAPROXY_BIN for testkit and the updater). */
  haproxyBin: string | null;
  /** --cluster: two load balancers on a 3-member etcd in network namespaces (root). Default false. */
  cluster: boolean;
}

export function usage(): string {
  return `usage: npm run demo -- [--cluster] [--short] [--duration <s>] [--outage <s>] [--keep] [--haproxy-bin <path>]
  --cluster            the story on two load balancers (HAProxy + updater each) and a
                       3-member etcd cluster in network namespaces, the etcd leader killed
                       on screen; needs root (not with --keep)
  --short              short story (~20 s of traffic), as the test runs it
  --duration <s>       length of the traffic phase in seconds (default 60; 15-600)
  --outage <s>         how long etcd stays down in step 6 (default 6, --short 3; 1-60).
                       Registrar leases (TTL 5 s) are lost after ~10 s without etcd: the
                       registrars exit and the demo restarts them
  --keep               leave etcd, HAProxy, the updater and the apps running afterwards
                       (until Ctrl-C, at most 1 h), and print how to explore them
  --haproxy-bin <path> HAProxy executable (default: $HAPROXY_BIN, else haproxy on PATH);
                       etcd and etcdctl come from $ETCD_BIN / $ETCDCTL_BIN or PATH`;
}

/** Parses argv; null for --help; throws on bad input, naming the flag. */
export function parseOptions(argv: string[]): Options | null {
  const o: Options = { durationS: 60, keep: false, keepMaxS: 3600, short: false, outageMs: null, haproxyBin: null, cluster: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = () => {
      const v = a.includes('=') ? a.slice(a.indexOf('=') + 1) : argv[++i];
      if (v === undefined || v === '') throw new Error(`${a.split('=')[0]}: needs a value`);
      return v;
    };
    const seconds = (flag: string, min: number, max: number) => {
      const v = value();
      const n = Number(v);
      if (!Number.isFinite(n) || n < min || n > max) throw new Error(`${flag}: '${v}' is not a number of seconds ${min}-${max}`);
      return n;
    };
    const is = (flag: string) => a === flag || a.startsWith(`${flag}=`);
    if (a === '--short') {
      o.short = true;
      o.durationS = 20;
    } else if (a === '--keep') o.keep = true;
    else if (a === '--cluster') o.cluster = true;
    else if (is('--duration')) o.durationS = seconds('--duration', 15, 600);
    else if (is('--outage')) o.outageMs = seconds('--outage', 1, 60) * 1000;
    else if (is('--haproxy-bin')) o.haproxyBin = value();
    else if (a === '--help' || a === '-h') return null;
    else throw new Error(`unknown argument '${a}'\n${usage()}`);
  }
  if (o.cluster && o.keep) throw new Error('--keep: not supported with --cluster (the test hosts exist only while the demo runs)');
  return o;
}
