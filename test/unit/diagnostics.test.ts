/** HAProxy's own lines at the level they mean, and the settings stamp `plan` and `run` share. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { haproxyLineLevel } from '../../src/daemon/haproxy-process.js';
import { settingsChanged, stampConfig } from '../../src/daemon/settings-stamp.js';
import { defaultSettings } from '../../src/render/index.js';

test('server UP/DOWN transitions are info, ALERT is error, other warnings stay warnings', () => {
  const cases: Array<[string, 'error' | 'warn' | 'info']> = [
    ['[WARNING]  (123) : Server be_web/s1 is UP, reason: Layer4 check passed, check duration: 0ms. 1 active and 0 backup servers online.', 'info'],
    ['[WARNING]  (123) : Server be_web/s2 is DOWN, reason: Layer4 connection problem, info: "Connection refused".', 'info'],
    ['[WARNING]  (123) : Server be_web/s3 is going DOWN for maintenance. 2 active and 0 backup servers left.', 'info'],
    ['[ALERT]    (123) : backend \'be_web\' has no server available!', 'error'],
    ['[ALERT]    (123) : Starting frontend fe_http: cannot bind socket (Address already in use) [127.0.0.1:8080]', 'error'],
    ["[WARNING]  (123) : config : Can't open global server state file '/x/server-state': No such file or directory", 'warn'],
    ['[NOTICE]   (123) : Loading success.', 'info'],
  ];
  for (const [line, level] of cases) assert.equal(haproxyLineLevel(line), level, line);
});

test('a config rendered with other settings (or without a stamp) counts as a settings change', () => {
  const a = defaultSettings('/tmp/hu-a');
  const b = { ...a, httpPort: 9999 };
  const cfg = stampConfig('global\n', a);
  assert.equal(settingsChanged(cfg, a), false);
  assert.equal(settingsChanged(cfg, b), true);
  assert.equal(settingsChanged('global\n', a), true);
});
