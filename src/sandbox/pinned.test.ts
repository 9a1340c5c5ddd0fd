import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../config/load.js';
import type { RuntimeHandler } from '../oci/types.js';
import { run } from '../util/run.js';
import { mountsUnder, unmountAll } from './mounts.js';
import { infraNeededBecause, pinNamespaces, pinnedAlive, pinnedPaths, unpinNamespaces } from './pinned.js';
import type { SandboxNamespaces } from './types.js';

const runc: RuntimeHandler = { name: 'runc', path: '/usr/sbin/runc', root: '/run/runc', type: 'oci' };
const ownPid: SandboxNamespaces = { network: 'pod', pid: 'container', ipc: 'pod' };

async function configWith(toml: string) {
  const dir = await mkdtemp(join(tmpdir(), 'berth-pinned-'));
  try {
    const file = join(dir, 'berth.toml');
    await writeFile(file, toml);
    return (await loadConfig({ file })).config;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('a pod on runc or crun goes without an infra unless something needs one', async () => {
  assert.equal((await configWith('')).runtime.drop_infra, false, 'off by default: every pod has an infra');
  const config = await configWith('[runtime]\ndrop_infra = true\n');
  const pod = { namespaces: ownPid, userns: false, sysctls: {} };
  assert.equal(infraNeededBecause(config, runc, pod), undefined);
  assert.equal(infraNeededBecause(config, { ...runc, name: 'fast', path: '/usr/bin/crun' }, pod), undefined);
  assert.equal(
    infraNeededBecause(config, runc, { ...pod, namespaces: { ...ownPid, network: 'node', pid: 'node' } }),
    undefined,
  );
  assert.match(
    infraNeededBecause(config, runc, { ...pod, namespaces: { ...ownPid, pid: 'pod' } }) ?? '',
    /shares a PID namespace/,
  );
  assert.match(infraNeededBecause(config, runc, { ...pod, userns: true }) ?? '', /user namespace/);
  assert.match(
    infraNeededBecause(config, runc, { ...pod, sysctls: { 'kernel.shm_rmid_forced': '1' } }) ?? '',
    /sysctls/,
  );
  assert.match(
    infraNeededBecause(config, { ...runc, name: 'gvisor', path: '/usr/bin/runsc' }, pod) ?? '',
    /"gvisor" is not runc or crun/,
  );
  assert.match(infraNeededBecause(config, { ...runc, type: 'vm' }, pod) ?? '', /not runc or crun/);
  const off = await configWith('');
  assert.match(infraNeededBecause(off, runc, pod) ?? '', /drop_infra is off/);
});

test('the pinned files: IPC with a pod IPC namespace, UTS with a pod network', () => {
  assert.deepEqual(pinnedPaths('/p', ownPid), { ipc: '/p/ns/ipc', uts: '/p/ns/uts' });
  assert.deepEqual(pinnedPaths('/p', { network: 'node', pid: 'container', ipc: 'pod' }), {
    ipc: '/p/ns/ipc',
  });
  assert.deepEqual(pinnedPaths('/p', { network: 'pod', pid: 'node', ipc: 'node' }), { uts: '/p/ns/uts' });
  assert.deepEqual(pinnedPaths('/p', { network: 'node', pid: 'node', ipc: 'node' }), {});
});

test('pinned namespaces: the UTS one has the hostname, both are mounts until unpinned', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'berth-pin-'));
  try {
    const pinned = pinnedPaths(dir, ownPid);
    await pinNamespaces(dir, pinned, 'pinned-host');
    assert.deepEqual((await mountsUnder(join(dir, 'ns'))).sort(), [pinned.ipc, pinned.uts].sort());
    assert.equal(await pinnedAlive(pinned), true);
    const inside = await run('nsenter', [`--uts=${pinned.uts}`, 'hostname']);
    assert.equal(inside.stdout.trim(), 'pinned-host');
    const ipcIno = (await stat(pinned.ipc!)).ino;
    assert.notEqual(ipcIno, (await stat('/proc/self/ns/ipc')).ino, 'a new IPC namespace');
    await unpinNamespaces(dir);
    assert.deepEqual(await mountsUnder(join(dir, 'ns')), []);
    assert.equal(await pinnedAlive(pinned), false);
    await unpinNamespaces(dir); // idempotent
  } finally {
    await unmountAll(dir).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
});

test('a pin that fails leaves nothing mounted', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'berth-pin-'));
  try {
    // The UTS file cannot be made: the IPC one was, and must not stay pinned.
    const pinned = { ipc: join(dir, 'ns', 'ipc'), uts: join(dir, 'no-such-dir', 'uts') };
    await assert.rejects(pinNamespaces(dir, pinned, 'x'), /ENOENT/);
    assert.deepEqual(await mountsUnder(dir), []);
  } finally {
    await unmountAll(dir).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
});
