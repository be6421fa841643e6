import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseArgv, Flags, FLAGS, envName, parseDuration, helpText, COMMANDS } from '../../src/config.js';
import { ConfigError } from '../../src/errors.js';

test('design.md flag names exist for run, with their defaults', () => {
  const p = parseArgv(['run'], {});
  const f = new Flags(p);
  assert.deepEqual(f.list('etcd'), ['http://127.0.0.1:2379']);
  assert.equal(f.str('prefix'), '/haproxy-discover');
  assert.equal(f.str('haproxy'), 'managed');
  assert.equal(f.str('reload-guard'), 'none');
  for (const name of ['etcd', 'prefix', 'state-dir', 'haproxy', 'master-socket', 'runtime-socket', 'http-port', 'https-port', 'stats-port', 'certs', 'reload-guard', 'listen']) {
    assert.ok(FLAGS.some((x) => x.name === name && x.commands.includes('run')), name);
  }
});

test('flags: command line beats env, env beats default, --no-x and --x=v forms', () => {
  const env = { HAPROXY_UPDATER_HTTP_PORT: '8080', HAPROXY_UPDATER_PREFIX: '/env' };
  const f = new Flags(parseArgv(['run', '--prefix=/cli', '--no-hold-until-healthy', '--drain-timeout', '2s'], env));
  assert.equal(f.port('http-port'), 8080);
  assert.equal(f.str('prefix'), '/cli');
  assert.equal(f.bool('hold-until-healthy'), false);
  assert.equal(f.ms('drain-timeout'), 2000);
  assert.ok(f.isSet('http-port') && f.isSet('prefix') && !f.isSet('stats-port'));
});

test('bad flags give a clear error naming the flag and env var', () => {
  const cases: Array<[string[], RegExp, (f: Flags) => unknown]> = [
    [['run', '--http-port', '70000'], /--http-port \(HAPROXY_UPDATER_HTTP_PORT\): 70000 is outside 1-65535/, (f) => f.port('http-port')],
    [['run', '--http-port', 'abc'], /not a whole number/, (f) => f.port('http-port')],
    [['run', '--haproxy', 'docker'], /'docker' is not one of managed, external/, (f) => f.str('haproxy')],
    [['run', '--drain-timeout', 'soon'], /not a duration/, (f) => f.ms('drain-timeout')],
    [['run', '--hold-until-healthy=maybe'], /not a boolean/, (f) => f.bool('hold-until-healthy')],
    [['run', '--listen', 'nohost'], /not host:port/, (f) => f.hostPort('listen')],
    [['run', '--state-dir', '/tmp/a b'], /paths with whitespace/, (f) => f.path('state-dir')],
    [['run', '--stats-user', 'a\nb'], /control characters/, (f) => f.str('stats-user')],
  ];
  for (const [argv, re, get] of cases) {
    const f = new Flags(parseArgv(argv, {}));
    assert.throws(() => get(f), (err: unknown) => err instanceof ConfigError && re.test(err.message), argv.join(' '));
  }
  assert.throws(() => parseArgv(['run', '--bogus'], {}), /unknown flag --bogus for 'run'/);
  assert.throws(() => parseArgv(['register', '--http-port', '1'], {}), /--http-port does not apply to 'register'/);
  assert.throws(() => parseArgv(['frobnicate'], {}), /unknown command 'frobnicate'/);
  assert.throws(() => parseArgv(['run', '--prefix'], {}), /--prefix needs a value/);
});

test('durations', () => {
  for (const [t, ms] of [['250ms', 250], ['5s', 5000], ['2m', 120000], ['1.5s', 1500], ['40', 40]] as const) assert.equal(parseDuration(t), ms);
  for (const t of ['', 's', '-1s', '1d', '1 s']) assert.equal(parseDuration(t), null, t);
});

test('--help of every command lists each of its flags with the env var', () => {
  for (const c of COMMANDS) {
    const text = helpText(c);
    for (const f of FLAGS.filter((x) => x.commands.includes(c))) {
      assert.ok(text.includes(`--${f.name}`), `${c} --help lacks --${f.name}`);
      assert.ok(text.includes(envName(f.name)), `${c} --help lacks ${envName(f.name)}`);
    }
  }
  assert.match(helpText(), /Commands:/);
});
