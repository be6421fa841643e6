import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as E from '../../src/errors.js';

// One table: every reply text HAProxy 2.6.12 gave for a refusal (notes §2–§7) → class, code.
const cases: Array<[reply: string, cls: Function, code: string, recoverable: boolean]> = [
  ['No such backend.\n\n', E.NoSuchBackendError, 'E_NO_SUCH_BACKEND', false],
  ["Can't find backend.\n\n", E.NoSuchBackendError, 'E_NO_SUCH_BACKEND', false],
  ['No such proxy.\n\n', E.NoSuchBackendError, 'E_NO_SUCH_BACKEND', false],
  ['No such server.\n\n', E.NoSuchServerError, 'E_NO_SUCH_SERVER', false],
  ['Unknown map identifier. Please use #<id> or <file>.\n\n', E.NoSuchMapError, 'E_NO_SUCH_MAP', false],
  ['Key not found.\n\n', E.MapEntryNotFoundError, 'E_MAP_ENTRY_NOT_FOUND', false],
  ['entry not found.\n\n', E.MapEntryNotFoundError, 'E_MAP_ENTRY_NOT_FOUND', false],
  ['Version number out of range.\n\n', E.MapVersionError, 'E_MAP_VERSION', false],
  ['Permission denied\n\n', E.PermissionDeniedError, 'E_PERMISSION_DENIED', false],
  ["Invalid addr '1.2.3' by 'stats socket command'\n\n", E.InvalidAddressError, 'E_INVALID_ADDRESS', false],
  ["problem converting port 'abc' to an int\n\n", E.InvalidPortError, 'E_INVALID_PORT', false],
  ['provided port is invalid\n\n', E.InvalidPortError, 'E_INVALID_PORT', false],
  ['Absolute weight can only be between 0 and 256 inclusive.\n\n', E.InvalidWeightError, 'E_INVALID_WEIGHT', false],
  ['Empty weight string empty or preceded by garbage\n', E.InvalidWeightError, 'E_INVALID_WEIGHT', false],
  ["Backend is using a static LB algorithm and only accepts weights '0%' and '100%'.\n\n", E.StaticLoadBalancingError, 'E_STATIC_LB', false],
  ['Backend must use a dynamic load balancing to support dynamic servers.\n', E.StaticLoadBalancingError, 'E_STATIC_LB', false],
  ['Unknown command, but maybe one of the following ones is a better match:\n  add map\n', E.UnknownCommandError, 'E_UNKNOWN_COMMAND', false],
  ['Proxy is disabled.\n\n', E.ProxyDisabledError, 'E_PROXY_DISABLED', true],
  ['Only servers in maintenance mode can be deleted.\n', E.ServerNotInMaintenanceError, 'E_SERVER_NOT_IN_MAINT', false],
  ['Server still has connections attached to it, cannot remove it.\n', E.ServerBusyError, 'E_SERVER_BUSY', true],
  ['Already exists a server with the same name in backend.\n\n', E.ServerExistsError, 'E_SERVER_EXISTS', false],
  ['This server cannot be removed at runtime due to other configuration elements pointing to it.\n', E.ServerNotRemovableError, 'E_SERVER_NOT_REMOVABLE', false],
  ["'cookie' option is not accepted for dynamic server\n\n", E.UnsupportedOptionError, 'E_UNSUPPORTED_OPTION', false],
  ['agent checks are not enabled on this server.\n', E.UnsupportedOptionError, 'E_UNSUPPORTED_OPTION', false],
  ['Update for the current server address family is only supported through configuration file.\n\n', E.AddressFamilyError, 'E_ADDRESS_FAMILY', false],
  ["'set server <srv> health' expects 'up', 'stopping', or 'down'.\n\n", E.RuntimeCommandError, 'E_RUNTIME_COMMAND', false],
  ["'server' expects <name> and <addr>[:<port>] as arguments.\n\n", E.RuntimeCommandError, 'E_RUNTIME_COMMAND', false],
  ['usage: set server <backend>/<server> addr | agent | agent-addr\n\n', E.RuntimeCommandError, 'E_RUNTIME_COMMAND', false],
  // ssl cert / crt-list (full captures in test/fixtures/runtime/err-ssl-*, err-crt-list-*)
  ["Certificate '/c/a.pem' already exists!\n", E.SslCertExistsError, 'E_SSL_CERT_EXISTS', false],
  ["Can't replace a certificate which is not referenced by the configuration!\nCan't update /c/a.pem!\n", E.SslCertNotFoundError, 'E_SSL_CERT_NOT_FOUND', false],
  ["Can't remove the certificate: certificate '/c/a.pem' doesn't exist!\n\n", E.SslCertNotFoundError, 'E_SSL_CERT_NOT_FOUND', false],
  ["Can't display the certificate: Not found or the certificate is a bundle!\n", E.SslCertNotFoundError, 'E_SSL_CERT_NOT_FOUND', false],
  ["Can't edit the crt-list: certificate '/c/a.pem' does not exist!\n", E.SslCertNotFoundError, 'E_SSL_CERT_NOT_FOUND', false],
  ["Can't remove the certificate: certificate '/c/a.pem' in use, can't be deleted!\n\n", E.SslCertInUseError, 'E_SSL_CERT_IN_USE', false],
  ["unable to load certificate from file '/c/a.pem'.\nCan't load the payload\nCan't update /c/a.pem!\n", E.SslCertRefusedError, 'E_SSL_CERT_REFUSED', false],
  ["inconsistencies between private key and certificate loaded '/c/a.pem'.\nCan't commit /c/a.pem!\n", E.SslCertRefusedError, 'E_SSL_CERT_REFUSED', false],
  ['The transaction must contain at least a certificate and a private key!\nCan\'t commit /c/a.pem!\n', E.SslCertRefusedError, 'E_SSL_CERT_REFUSED', false],
  ['No ongoing transaction!\n', E.SslTransactionError, 'E_SSL_TRANSACTION', false],
  ["The ongoing transaction is about '/c/a.pem' but you are trying to set '/c/b.pem'\nCan't commit /c/b.pem!\n", E.SslTransactionError, 'E_SSL_TRANSACTION', false],
  ["Can't edit the crt-list: crt-list '/c/l' does not exist!\n", E.CrtListError, 'E_CRT_LIST', false],
  ["Can't delete the entry: certificate '/c/a.pem' is empty!\n", E.CrtListError, 'E_CRT_LIST', false],
  ["didn't find the specified filename\n", E.CrtListError, 'E_CRT_LIST', false],
  // 3.4.7, tried by hand
  ["Error during backend creation : name is already used by other proxy 'backend dyn'.\n", E.BackendRefusedError, 'E_BACKEND_REFUSED', false],
  ['Only a backend without server can be deleted.\n', E.BackendRefusedError, 'E_BACKEND_REFUSED', false],
  ['The command is too big for the buffer size. Please change tune.bufsize in the configuration to use a bigger command.\n', E.PayloadTooLargeError, 'E_PAYLOAD_TOO_LARGE', false],
  ['The command line is too big for the buffer size. Please change tune.bufsize in the configuration to use a bigger command.\n', E.PayloadTooLargeError, 'E_PAYLOAD_TOO_LARGE', false],
];

test('every HAProxy refusal maps to its class, code and recoverability', () => {
  for (const [reply, cls, code, recoverable] of cases) {
    const err = E.classifyReply(reply, 'some command');
    assert.ok(err, `no class for ${JSON.stringify(reply)}`);
    assert.ok(err instanceof cls, `${JSON.stringify(reply)} → ${err.name}, expected ${cls.name}`);
    assert.equal(err.code, code);
    assert.equal(err.name, cls.name);
    assert.equal(err.recoverable, recoverable, `${cls.name}.recoverable`);
    assert.equal(err.context.command, 'some command');
    assert.match(err.message, /\(command: some command\)$/);
  }
});

test('successful replies are not errors', () => {
  for (const ok of [
    '',
    '\n',
    "IP changed from '0.0.0.0' to '127.0.0.1', port changed from '+0' to '18082' by 'stats socket command'\n\n",
    'New server registered.\n\n',
    'Server deleted.\n',
    '7 (initial 1)\n\n',
    'New version created: 1\n\n',
  ]) {
    assert.equal(E.classifyReply(ok, 'x'), null, JSON.stringify(ok));
  }
});

test('non-reply error classes carry code, name, context and cause', () => {
  const cause = new Error('low level');
  const table: Array<[E.UpdaterError, string, boolean]> = [
    [new E.InvalidArgumentError('bad', { arg: 'a;b' }, { cause }), 'E_INVALID_ARGUMENT', false],
    [new E.RegistryValueError('/p/http-services/x/domain', 'not a DNS name', { cause }), 'E_REGISTRY_VALUE', false],
    [new E.ConfigError('bad flag', {}, { cause }), 'E_CONFIG', false],
    [new E.RuntimeTimeoutError('t', {}, { cause }), 'E_RUNTIME_TIMEOUT', true],
    [new E.RuntimeConnectionError('c', {}, { cause }), 'E_RUNTIME_CONNECTION', true],
    [new E.ReplyParseError('p', {}, { cause }), 'E_REPLY_PARSE', false],
    [new E.ConfigInvalidError('cfg', {}, { cause }), 'E_CONFIG_INVALID', false],
    [new E.ReloadFailedError('r', {}, { cause }), 'E_RELOAD_FAILED', false],
    [new E.ReloadTimeoutError('r', {}, { cause }), 'E_RELOAD_TIMEOUT', true],
    [new E.GuardError('g', {}, { cause }), 'E_GUARD', false],
    [new E.EtcdUnavailableError('e', {}, { cause }), 'E_ETCD_UNAVAILABLE', true],
    [new E.PayloadTooLargeError('big', { bytes: 20000, limit: 15360 }, { cause }), 'E_PAYLOAD_TOO_LARGE', false],
    [new E.CertFileError('/certs/a.pem', 'the private key does not match the first certificate', { problem: 'key-mismatch' }, { cause }), 'E_CERT_FILE', false],
  ];
  for (const [err, code, recoverable] of table) {
    assert.equal(err.code, code);
    assert.equal(err.name, err.constructor.name);
    assert.equal(err.recoverable, recoverable);
    assert.equal(err.cause, cause);
    assert.ok(err instanceof E.UpdaterError);
    assert.equal(err.toJSON().code, code);
  }
  const cf = new E.CertFileError('/certs/a.pem', 'expired', { problem: 'expired' });
  assert.equal(cf.message, '/certs/a.pem: expired');
  assert.deepEqual(cf.context, { path: '/certs/a.pem', reason: 'expired', problem: 'expired' });
  const rv = new E.RegistryValueError('/k', 'why');
  assert.equal(rv.message, '/k: why');
  assert.deepEqual(rv.context, { key: '/k', reason: 'why' });
});
