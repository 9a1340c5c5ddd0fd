import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { silentLogger } from '../../log.js';
import {
  canLowerOomScore,
  capabilitiesFromMask,
  clampOomScoreAdj,
  detectSpecHost,
  runtimeFeatures,
} from './host.js';

test('capability masks decode by bit number', () => {
  assert.deepEqual(capabilitiesFromMask('0000000000000005'), ['CAP_CHOWN', 'CAP_DAC_READ_SEARCH']);
  const hostLike = capabilitiesFromMask('000001fffeffffff');
  assert.equal(hostLike.length, 40);
  assert.ok(!hostLike.includes('CAP_SYS_RESOURCE'));
  assert.ok(hostLike.includes('CAP_CHECKPOINT_RESTORE'));
});

test('oom score clamp keeps values at or above the floor', () => {
  assert.equal(clampOomScoreAdj(-998, 0), 0);
  assert.equal(clampOomScoreAdj(-998, -1000), -998);
  assert.equal(clampOomScoreAdj(500, 0), 500);
  assert.equal(clampOomScoreAdj(2000, -1000), 1000);
});

test('oom probe agrees with CAP_SYS_RESOURCE in the effective set and leaves berth’s score as it was', async () => {
  const before = await readFile('/proc/self/oom_score_adj', 'utf8');
  const status = await readFile('/proc/self/status', 'utf8');
  const capEff = /CapEff:\s*([0-9a-f]+)/.exec(status)![1];
  const hasSysResource = capabilitiesFromMask(capEff).includes('CAP_SYS_RESOURCE');
  assert.equal(await canLowerOomScore(), hasSysResource);
  assert.equal(await readFile('/proc/self/oom_score_adj', 'utf8'), before);
  const host = await detectSpecHost({
    restrictOomScoreAdj: 'auto',
    cgroupDriver: 'cgroupfs',
    log: silentLogger,
  });
  assert.equal(host.minOomScoreAdj, hasSysResource ? -1000 : Number(before));
  const forced = await detectSpecHost({
    restrictOomScoreAdj: 'false',
    cgroupDriver: 'cgroupfs',
    log: silentLogger,
  });
  assert.equal(forced.minOomScoreAdj, -1000);
});

test('host detection reads the bounding set and cgroup layout', async () => {
  const host = await detectSpecHost({ restrictOomScoreAdj: 'true', cgroupDriver: 'auto', log: silentLogger });
  const status = await readFile('/proc/self/status', 'utf8');
  assert.deepEqual(host.boundingCapabilities, capabilitiesFromMask(/CapBnd:\s*([0-9a-f]+)/.exec(status)![1]));
  let unified = false;
  try {
    await readFile('/sys/fs/cgroup/cgroup.controllers');
    unified = true;
  } catch {
    // v1 or hybrid
  }
  assert.equal(host.cgroupVersion, unified ? 2 : 1);
  assert.equal(host.seccompEnabled, /^Seccomp:/m.test(status));
});

test('runtime features: runc reports its mount options; a binary without them is unknown', async () => {
  const runc = await runtimeFeatures({ name: 'runc', path: '/usr/sbin/runc', root: '/tmp/x', type: 'oci' });
  assert.equal(runc.known, true);
  assert.ok(runc.mountOptions.includes('rbind'));
  const none = await runtimeFeatures({ name: 'false', path: '/bin/false', root: '/tmp/x', type: 'oci' });
  assert.deepEqual(none, { known: false, mountOptions: [] });
});
