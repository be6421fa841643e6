/** src/watch: etcd registry → typed Registry (watcher, parser, validators) and upstream registration. */
export {
  parseRegistry,
  parseHost,
  parseDomains,
  parseUpstreamValue,
  parsePorts,
  parseOptions,
  parseUrlReg,
  isTruthyFlag,
  parseIp,
  parsePort,
  parseAddrPort,
  formatAddrPort,
  formatUpstreamValue,
  isValidName,
  normalizePrefix,
  MAX_VALUE_BYTES,
  MAX_URL_REG_LENGTH,
  type Parsed,
  type ParseResult,
  type UpstreamValue,
  type ParseOptions,
  type RegistryKv,
} from './parse.js';
export { AddressPolicy, parseCidr, parseCidrList, CIDR_KEYWORDS, DEFAULT_UPSTREAM_CIDRS, type Cidr, type AddressPolicyOptions } from './trust.js';
export { RegistryWatcher, type RegistryWatcherOptions, type RegistryUpdate, type WatchState, type WatchStats } from './watcher.js';
export {
  registerUpstream,
  keepRegistered,
  deregisterUpstream,
  upstreamKey,
  DEFAULT_TTL_SEC,
  type RegisterOptions,
  type Registration,
  type UpstreamRef,
} from './register.js';
export { createEtcdClient, validateEndpoints, type EtcdTlsOptions, type EtcdAuthOptions, type EtcdConnectOptions } from './client.js';
export { loadRegistryOnce, loadRange, type Snapshot, type LoadOnceOptions } from './load.js';
