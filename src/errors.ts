/**
 * Every error the updater raises: one class per condition, each with a stable `code`,
 * a `context` object naming what it was about, an optional `cause`, and `recoverable`
 * (true when retrying the same step later can succeed without anyone changing anything).
 *
 * `classifyReply` maps HAProxy Runtime API reply text to these classes (REPLY_ERRORS).
 */

export type ErrorContext = Readonly<Record<string, unknown>>;

export abstract class UpdaterError extends Error {
  abstract readonly code: string;
  /** Retrying later may succeed with nothing else changed. */
  readonly recoverable: boolean = false;
  readonly context: ErrorContext;

  constructor(message: string, context: ErrorContext = {}, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.context = context;
  }

  toJSON(): Record<string, unknown> {
    return { name: this.name, code: this.code, message: this.message, context: this.context };
  }
}

// ---------------------------------------------------------------- input validation

/** A value was refused before anything was sent or written (injection, range, syntax). */
export class InvalidArgumentError extends UpdaterError {
  readonly code = 'E_INVALID_ARGUMENT';
}

/** A registry entry (etcd key/value) was rejected; the rest of the registry still applies. */
export class RegistryValueError extends UpdaterError {
  readonly code = 'E_REGISTRY_VALUE';
  constructor(readonly key: string, readonly reason: string, options?: { cause?: unknown }) {
    super(`${key}: ${reason}`, { key, reason }, options);
  }
}

/** A command-line flag or environment variable is wrong. */
export class ConfigError extends UpdaterError {
  readonly code = 'E_CONFIG';
}

// ---------------------------------------------------------------- socket transport

/** The socket did not connect, or did not answer, before the deadline. */
export class RuntimeTimeoutError extends UpdaterError {
  readonly code = 'E_RUNTIME_TIMEOUT';
  override readonly recoverable = true;
}

/** Connection refused/reset or socket file missing (HAProxy restarting or reloading). */
export class RuntimeConnectionError extends UpdaterError {
  readonly code = 'E_RUNTIME_CONNECTION';
  override readonly recoverable = true;
}

/** A reply did not have the shape its parser expects. */
export class ReplyParseError extends UpdaterError {
  readonly code = 'E_REPLY_PARSE';
}

// ---------------------------------------------------------------- HAProxy replies

export class NoSuchBackendError extends UpdaterError {
  readonly code = 'E_NO_SUCH_BACKEND';
}
export class NoSuchServerError extends UpdaterError {
  readonly code = 'E_NO_SUCH_SERVER';
}
export class NoSuchMapError extends UpdaterError {
  readonly code = 'E_NO_SUCH_MAP';
}
export class MapEntryNotFoundError extends UpdaterError {
  readonly code = 'E_MAP_ENTRY_NOT_FOUND';
}
export class MapVersionError extends UpdaterError {
  readonly code = 'E_MAP_VERSION';
}
export class PermissionDeniedError extends UpdaterError {
  readonly code = 'E_PERMISSION_DENIED';
}
export class InvalidAddressError extends UpdaterError {
  readonly code = 'E_INVALID_ADDRESS';
}
export class InvalidPortError extends UpdaterError {
  readonly code = 'E_INVALID_PORT';
}
export class InvalidWeightError extends UpdaterError {
  readonly code = 'E_INVALID_WEIGHT';
}
/** `balance source`/`static-rr` accept only 0% and 100% weights and no dynamic servers. */
export class StaticLoadBalancingError extends UpdaterError {
  readonly code = 'E_STATIC_LB';
}
export class UnknownCommandError extends UpdaterError {
  readonly code = 'E_UNKNOWN_COMMAND';
}
/** Command reached a stopping (old) worker after a reload: reconnect and retry. */
export class ProxyDisabledError extends UpdaterError {
  readonly code = 'E_PROXY_DISABLED';
  override readonly recoverable = true;
}
export class ServerNotInMaintenanceError extends UpdaterError {
  readonly code = 'E_SERVER_NOT_IN_MAINT';
}
/**
 * A dynamic-backend command (`add/publish/unpublish/del backend`, 3.4+) was refused, e.g. a
 * used name or a backend that still has servers. The daemon falls back to a reload.
 */
export class BackendRefusedError extends UpdaterError {
  readonly code = 'E_BACKEND_REFUSED';
}
/** `del server` with connections still attached: retry once they are gone. */
export class ServerBusyError extends UpdaterError {
  readonly code = 'E_SERVER_BUSY';
  override readonly recoverable = true;
}
export class ServerExistsError extends UpdaterError {
  readonly code = 'E_SERVER_EXISTS';
}
/** The server cannot be removed at runtime (it is tracked, or similar). */
export class ServerNotRemovableError extends UpdaterError {
  readonly code = 'E_SERVER_NOT_REMOVABLE';
}
export class UnsupportedOptionError extends UpdaterError {
  readonly code = 'E_UNSUPPORTED_OPTION';
}
export class AddressFamilyError extends UpdaterError {
  readonly code = 'E_ADDRESS_FAMILY';
}
/** `new ssl cert` for a name HAProxy already holds. */
export class SslCertExistsError extends UpdaterError {
  readonly code = 'E_SSL_CERT_EXISTS';
}
/** The certificate (store entry) is unknown to HAProxy, or not referenced by any bind. */
export class SslCertNotFoundError extends UpdaterError {
  readonly code = 'E_SSL_CERT_NOT_FOUND';
}
/** `del ssl cert` on a certificate still listed in a crt-list. */
export class SslCertInUseError extends UpdaterError {
  readonly code = 'E_SSL_CERT_IN_USE';
}
/** HAProxy refused the PEM content (unreadable, key mismatch, no key). */
export class SslCertRefusedError extends UpdaterError {
  readonly code = 'E_SSL_CERT_REFUSED';
}
/**
 * No transaction, or the one open transaction is about another certificate. HAProxy 2.6
 * keeps one ssl-cert transaction at a time, and a `set ssl cert B` while A's is open
 * silently loads B's PEM into A's transaction: the reply names A, which the parser checks.
 */
export class SslTransactionError extends UpdaterError {
  readonly code = 'E_SSL_TRANSACTION';
}
/** A crt-list is unknown, or an entry cannot be edited (absent, ambiguous). */
export class CrtListError extends UpdaterError {
  readonly code = 'E_CRT_LIST';
}
/** Any other reply HAProxy marks as a refusal that has no class of its own. */
export class RuntimeCommandError extends UpdaterError {
  readonly code = 'E_RUNTIME_COMMAND';
}

/**
 * A payload command is larger than the CLI buffer takes. Never sent: on 2.6.12 a command
 * plus payload of bufsize-1 bytes got no reply and the worker then died (watchdog), and
 * larger ones had the connection closed with no reply; 3.0/3.2 refuse bufsize-1 and more
 * with "The command (line) is too big for the buffer size"; 3.4 takes larger payloads but
 * gave no reply at bufsize-1, 2*bufsize-2 and 2*bufsize-1.
 */
export class PayloadTooLargeError extends UpdaterError {
  readonly code = 'E_PAYLOAD_TOO_LARGE';
}

// ---------------------------------------------------------------- certificates

/**
 * A PEM file in the certificates directory was not applied: `path` and `reason` say which
 * and why. The certificate it would have replaced keeps being served.
 */
export class CertFileError extends UpdaterError {
  readonly code = 'E_CERT_FILE';
  constructor(
    readonly path: string,
    readonly reason: string,
    context: ErrorContext = {},
    options?: { cause?: unknown },
  ) {
    super(`${path}: ${reason}`, { path, reason, ...context }, options);
  }
}

// ---------------------------------------------------------------- render, reload, guard

/** `haproxy -c` refused a rendered configuration; nothing was replaced. */
export class ConfigInvalidError extends UpdaterError {
  readonly code = 'E_CONFIG_INVALID';
}
/** A service HAProxy refused, left out of haproxy.cfg until its keys change; the rest is applied. */
export class ServiceQuarantinedError extends UpdaterError {
  readonly code = 'E_SERVICE_QUARANTINED';
}
/** The master reported the reload as failed (old worker kept serving). */
export class ReloadFailedError extends UpdaterError {
  readonly code = 'E_RELOAD_FAILED';
}
/** The reload counter did not move before the deadline. */
export class ReloadTimeoutError extends UpdaterError {
  readonly code = 'E_RELOAD_TIMEOUT';
  override readonly recoverable = true;
}
/** The reload guard (iptables) could not be set up or removed. */
export class GuardError extends UpdaterError {
  readonly code = 'E_GUARD';
}

// ---------------------------------------------------------------- registry source

export class EtcdUnavailableError extends UpdaterError {
  readonly code = 'E_ETCD_UNAVAILABLE';
  override readonly recoverable = true;
}

// ---------------------------------------------------------------- reply table

type ReplyErrorClass = new (message: string, context?: ErrorContext, options?: { cause?: unknown }) => UpdaterError;

/**
 * HAProxy 2.6 reply text → error class. Matched against the start of a trimmed reply
 * (or anywhere, for `contains`). Order matters: the first match wins. Texts were captured
 * from HAProxy 2.6.12 (see ../shared/haproxy-2.6-runtime-notes.md).
 */
export const REPLY_ERRORS: ReadonlyArray<{ match: RegExp; cls: ReplyErrorClass }> = [
  { match: /^No such backend\./, cls: NoSuchBackendError },
  { match: /^Can't find backend\./, cls: NoSuchBackendError },
  { match: /^No such proxy\./, cls: NoSuchBackendError },
  { match: /^No such server\./, cls: NoSuchServerError },
  { match: /^Unknown map identifier/, cls: NoSuchMapError },
  { match: /^Key not found\./, cls: MapEntryNotFoundError },
  { match: /^entry not found\./, cls: MapEntryNotFoundError },
  { match: /^Version number out of range\./, cls: MapVersionError },
  { match: /^Permission denied/, cls: PermissionDeniedError },
  { match: /^Invalid addr /, cls: InvalidAddressError },
  { match: /^problem converting port /, cls: InvalidPortError },
  { match: /^provided port is invalid/, cls: InvalidPortError },
  { match: /^Absolute weight can only be/, cls: InvalidWeightError },
  { match: /^Relative weight can only be/, cls: InvalidWeightError },
  { match: /^Empty weight string/, cls: InvalidWeightError },
  { match: /^Backend is using a static LB algorithm/, cls: StaticLoadBalancingError },
  { match: /^Backend must use a dynamic load balancing/, cls: StaticLoadBalancingError },
  { match: /^Unknown command/, cls: UnknownCommandError },
  // dynamic backends (3.4.7, tried by hand: /work/shared/haproxy-3.x-notes.md)
  { match: /^Error during backend creation/, cls: BackendRefusedError },
  { match: /^Only a backend without server can be deleted/, cls: BackendRefusedError },
  { match: /^Proxy is disabled\./, cls: ProxyDisabledError },
  { match: /^Only servers in maintenance mode can be deleted\./, cls: ServerNotInMaintenanceError },
  { match: /^Server still has connections attached/, cls: ServerBusyError },
  // `wait <ms> srv-removable` (3.0+): `Failed.`, on 3.4 followed by the reason.
  { match: /^Failed\. No such server\./, cls: NoSuchServerError },
  { match: /^Failed\. Only servers in maintenance mode can be deleted\./, cls: ServerNotInMaintenanceError },
  { match: /^Failed\.$/, cls: ServerBusyError },
  { match: /^Already exists a server with the same name/, cls: ServerExistsError },
  { match: /^This server cannot be removed at runtime/, cls: ServerNotRemovableError },
  { match: /option is not accepted for dynamic server/, cls: UnsupportedOptionError },
  { match: /^Update for the current server address family is only supported/, cls: AddressFamilyError },
  { match: /^agent checks are not enabled on this server/, cls: UnsupportedOptionError },
  { match: /^'set server <srv> ssl' cannot be set/, cls: UnsupportedOptionError },
  { match: /^'set server <srv> health' expects/, cls: RuntimeCommandError },
  { match: /^'set server <srv> state' expects/, cls: RuntimeCommandError },
  { match: /^'server' expects <name> and <addr>/, cls: RuntimeCommandError },
  { match: /^usage: /, cls: RuntimeCommandError },
  { match: /^Require '?backend\/server'?/, cls: RuntimeCommandError },
  { match: /^Missing /, cls: RuntimeCommandError },
  // ssl cert / crt-list family (2.6.12, test/fixtures/runtime/ssl-*.txt)
  { match: /^Certificate '.*' already exists!/, cls: SslCertExistsError },
  { match: /^Can't replace a certificate which is not referenced/, cls: SslCertNotFoundError },
  { match: /^Can't remove the certificate: .* in use, can't be deleted!/, cls: SslCertInUseError },
  { match: /^Can't remove the certificate: .* doesn't exist!/, cls: SslCertNotFoundError },
  { match: /^Can't display the certificate: Not found/, cls: SslCertNotFoundError },
  { match: /^Can't edit the crt-list: certificate .* does not exist!/, cls: SslCertNotFoundError },
  { match: /^Can't edit the crt-list/, cls: CrtListError },
  { match: /^Can't delete the entry/, cls: CrtListError },
  { match: /^didn't find the specified filename/, cls: CrtListError },
  { match: /^unable to load certificate/, cls: SslCertRefusedError },
  { match: /^inconsistencies between private key and certificate/, cls: SslCertRefusedError },
  { match: /^The transaction must contain at least a certificate and a private key/, cls: SslCertRefusedError },
  { match: /^No ongoing transaction/, cls: SslTransactionError },
  { match: /^The ongoing transaction is about /, cls: SslTransactionError },
  // 3.0 / 3.2 answer this for a command + payload of bufsize-1 bytes or more (2.6 does not: see PayloadTooLargeError).
  { match: /^The command (line )?is too big for the buffer size/, cls: PayloadTooLargeError },
];

/**
 * Turns a reply into the matching error, or null when the reply is not a known refusal.
 * `command` is recorded in the error context (never the raw payload of a `<<` command).
 */
export function classifyReply(reply: string, command: string): UpdaterError | null {
  const text = reply.trim();
  for (const { match, cls } of REPLY_ERRORS) {
    if (match.test(text)) {
      const firstLine = text.split('\n', 1)[0] ?? text;
      return new cls(`${firstLine} (command: ${command})`, { command, reply: text });
    }
  }
  return null;
}

// ---------------------------------------------------------------- process

/** Another live haproxy-updater holds the state dir's lock file. */
export class StateDirLockedError extends UpdaterError {
  readonly code = 'E_STATE_DIR_LOCKED';
  constructor(readonly stateDir: string, readonly holderPid: number, readonly lockPath: string) {
    super(`--state-dir ${stateDir}: in use by haproxy-updater PID ${holderPid} (lock ${lockPath})`, { stateDir, holderPid, lockPath });
  }
}
