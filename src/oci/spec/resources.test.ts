import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LinuxContainerResources } from '../../generated/api.js';
import { InvalidArgumentError } from '../../errors.js';
import { linuxResources } from './resources.js';
import type { SpecHost } from './types.js';

const v1: SpecHost = {
  cgroupDriver: 'cgroupfs',
  cgroupVersion: 1,
  boundingCapabilities: [],
  seccompEnabled: true,
  appArmorEnabled: false,
  minOomScoreAdj: 0,
  swapAccounting: true,
  hugetlb: true,
};
const v2: SpecHost = { ...v1, cgroupVersion: 2, cgroupDriver: 'systemd' };

test('cpu and memory map to OCI; zero means unset', () => {
  const r = LinuxContainerResources.fromPartial({
    cpuShares: 512n,
    cpuQuota: 50000n,
    cpuPeriod: 100000n,
    cpusetCpus: '0-1',
    cpusetMems: '0',
    memoryLimitInBytes: 64n * 1024n * 1024n,
  });
  assert.deepEqual(linuxResources(r, v1, 'c'), {
    cpu: { shares: 512, quota: 50000, period: 100000, cpus: '0-1', mems: '0' },
    memory: { limit: 67108864, swap: 67108864 },
  });
  assert.deepEqual(linuxResources(LinuxContainerResources.fromPartial({}), v1, 'c'), {});
  assert.deepEqual(linuxResources(undefined, v1, 'c'), {});
});

test('swap: the given memory+swap limit, none without swap accounting, never below the limit', () => {
  const r = LinuxContainerResources.fromPartial({ memoryLimitInBytes: 1000n, memorySwapLimitInBytes: 3000n });
  assert.deepEqual(linuxResources(r, v2, 'c').memory, { limit: 1000, swap: 3000 });
  assert.deepEqual(linuxResources(r, { ...v1, swapAccounting: false }, 'c').memory, { limit: 1000 });
  assert.throws(
    () =>
      linuxResources(
        LinuxContainerResources.fromPartial({ memoryLimitInBytes: 1000n, memorySwapLimitInBytes: 10n }),
        v1,
        'c',
      ),
    InvalidArgumentError,
  );
});

test('hugepages only where the hugetlb controller exists', () => {
  const r = LinuxContainerResources.fromPartial({ hugepageLimits: [{ pageSize: '2MB', limit: 4194304n }] });
  assert.deepEqual(linuxResources(r, v1, 'c').hugepageLimits, [{ pageSize: '2MB', limit: 4194304 }]);
  assert.equal(linuxResources(r, { ...v1, hugetlb: false }, 'c').hugepageLimits, undefined);
  assert.throws(
    () =>
      linuxResources(
        LinuxContainerResources.fromPartial({ hugepageLimits: [{ pageSize: '2M', limit: 1n }] }),
        v1,
        'c',
      ),
    InvalidArgumentError,
  );
});

test('unified settings need cgroup v2', () => {
  const r = LinuxContainerResources.fromPartial({ unified: { 'memory.high': '1000000', 'pids.max': '10' } });
  assert.deepEqual(linuxResources(r, v2, 'c').unified, { 'memory.high': '1000000', 'pids.max': '10' });
  assert.throws(
    () => linuxResources(r, v1, 'container "c"'),
    /container "c": unified cgroup settings \(memory.high, pids.max\) need cgroup v2/,
  );
  assert.throws(
    () => linuxResources(LinuxContainerResources.fromPartial({ unified: { '../x': '1' } }), v2, 'c'),
    InvalidArgumentError,
  );
});

test('bad cpusets are refused', () => {
  assert.throws(
    () => linuxResources(LinuxContainerResources.fromPartial({ cpusetCpus: '0-1;rm' }), v1, 'c'),
    InvalidArgumentError,
  );
});
