import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FailedPreconditionError, InvalidArgumentError } from '../../errors.js';
import { containerCapabilities, normalizeCapability } from './capabilities.js';
import { ALL_CAPABILITIES, DEFAULT_CAPABILITIES } from './defaults.js';

// A host like this one: everything but CAP_SYS_RESOURCE.
const HOST = ALL_CAPABILITIES.filter((c) => c !== 'CAP_SYS_RESOURCE');
const opts = { privileged: false, hostCapabilities: HOST, what: 'container "c"' };

test('names are normalised with or without CAP_, any case', () => {
  assert.equal(normalizeCapability('net_admin', 'c'), 'CAP_NET_ADMIN');
  assert.equal(normalizeCapability('CAP_SYS_ADMIN', 'c'), 'CAP_SYS_ADMIN');
  assert.equal(normalizeCapability('Cap_Chown', 'c'), 'CAP_CHOWN');
  assert.throws(() => normalizeCapability('FLY', 'c'), InvalidArgumentError);
});

test('default set when nothing is asked', () => {
  const caps = containerCapabilities(undefined, opts);
  assert.deepEqual(new Set(caps.bounding), new Set(DEFAULT_CAPABILITIES));
  assert.deepEqual(caps.effective, caps.bounding);
  assert.deepEqual(caps.permitted, caps.bounding);
  assert.deepEqual(caps.ambient, []);
  assert.deepEqual(caps.inheritable, []);
});

test('add and drop, drop wins', () => {
  const caps = containerCapabilities(
    {
      addCapabilities: ['NET_ADMIN', 'sys_time', 'CHOWN'],
      dropCapabilities: ['chown', 'CAP_KILL'],
      addAmbientCapabilities: [],
    },
    opts,
  );
  assert.ok(caps.bounding.includes('CAP_NET_ADMIN'));
  assert.ok(caps.bounding.includes('CAP_SYS_TIME'));
  assert.ok(!caps.bounding.includes('CAP_CHOWN'));
  assert.ok(!caps.bounding.includes('CAP_KILL'));
});

test('add ALL takes the host set (never more); drop ALL starts from none', () => {
  const all = containerCapabilities(
    { addCapabilities: ['ALL'], dropCapabilities: ['NET_RAW'], addAmbientCapabilities: [] },
    opts,
  );
  assert.equal(all.bounding.length, HOST.length - 1);
  assert.ok(!all.bounding.includes('CAP_SYS_RESOURCE'));
  assert.ok(!all.bounding.includes('CAP_NET_RAW'));
  const none = containerCapabilities(
    { addCapabilities: ['NET_BIND_SERVICE'], dropCapabilities: ['ALL'], addAmbientCapabilities: [] },
    opts,
  );
  assert.deepEqual(none.bounding, ['CAP_NET_BIND_SERVICE']);
  const empty = containerCapabilities(
    { addCapabilities: [], dropCapabilities: ['all'], addAmbientCapabilities: [] },
    opts,
  );
  assert.deepEqual(empty.bounding, []);
});

test('a capability the host lacks is refused by name', () => {
  assert.throws(
    () =>
      containerCapabilities(
        { addCapabilities: ['SYS_RESOURCE'], dropCapabilities: [], addAmbientCapabilities: [] },
        opts,
      ),
    (err: Error) =>
      err instanceof FailedPreconditionError &&
      /CAP_SYS_RESOURCE is not in berth's bounding set/.test(err.message),
  );
});

test('privileged gets every host capability', () => {
  const caps = containerCapabilities(
    { addCapabilities: [], dropCapabilities: ['ALL'], addAmbientCapabilities: [] },
    { ...opts, privileged: true },
  );
  assert.deepEqual(caps.bounding, HOST);
  assert.deepEqual(caps.effective, HOST);
});

test('ambient capabilities are also inheritable and permitted', () => {
  const caps = containerCapabilities(
    { addCapabilities: [], dropCapabilities: ['ALL'], addAmbientCapabilities: ['NET_BIND_SERVICE'] },
    opts,
  );
  assert.deepEqual(caps.ambient, ['CAP_NET_BIND_SERVICE']);
  assert.deepEqual(caps.inheritable, ['CAP_NET_BIND_SERVICE']);
  assert.deepEqual(caps.permitted, ['CAP_NET_BIND_SERVICE']);
});
