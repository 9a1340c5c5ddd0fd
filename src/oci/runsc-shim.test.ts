import { it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, constants, openSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  RUNSC_SHIM,
  conmonRuntime,
  removeStaleRunscLocks,
  startThroughShim,
  sweepStaleRunscLocks,
} from './runsc-shim.js';
import type { RuntimeHandler } from './types.js';

const runsc: RuntimeHandler = {
  name: 'gvisor',
  path: '/usr/bin/runsc',
  root: '/run/berth/runtimes/gvisor',
  type: 'oci',
  runtimeArgs: ['--network', 'host'],
};
const runc: RuntimeHandler = { name: 'runc', path: '/usr/sbin/runc', root: '/run/r', type: 'oci' };

it('conmon runs the handler itself, except for a container joining a runsc sandbox', async () => {
  assert.deepEqual(await conmonRuntime(runc, true, '/ctl'), {
    path: '/usr/sbin/runc',
    args: ['--root=/run/r'],
  });
  assert.deepEqual(await conmonRuntime(runsc, false, '/ctl'), {
    path: '/usr/bin/runsc',
    args: ['--root=/run/berth/runtimes/gvisor', '--network', 'host'],
  });
  assert.deepEqual(await conmonRuntime(runsc, true, '/ctl'), {
    path: RUNSC_SHIM,
    args: ['/ctl', '/usr/bin/runsc', '--root=/run/berth/runtimes/gvisor', '--network', 'host'],
  });
});

it('without the shim, joining a runsc sandbox is refused naming the handler and the missing helper', async () => {
  await assert.rejects(conmonRuntime(runsc, true, '/ctl', '/nonexistent/berth-runsc-shim'), (err: Error) => {
    assert.match(
      err.message,
      /runtime handler "gvisor" \(\/usr\/bin\/runsc\).*\/nonexistent\/berth-runsc-shim/,
    );
    return true;
  });
});

it('a start asked of a shim that no longer listens fails at once, naming the container and what to do', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'berth-shim-'));
  try {
    execFileSync('mkfifo', [join(dir, 'start'), join(dir, 'started')]);
    const started = Date.now();
    // The monitor pid is alive (this process), so only the refused request can end the wait.
    await assert.rejects(startThroughShim(dir, 'ctr1', process.pid), (err: Error) => {
      assert.match(
        err.message,
        /start of container ctr1: its runsc shim does not take requests \(ENXIO\); remove the container/,
      );
      return true;
    });
    assert.ok(Date.now() - started < 5000);
    assert.equal(await startThroughShim(join(dir, 'nothing-here'), 'ctr2', process.pid), false);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

it('the shim takes the start request as soon as its create has returned', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'berth-shim-'));
  try {
    // A runsc that creates and starts at once and reports a clean exit when waited for.
    const fakeRunsc = join(dir, 'runsc');
    await writeFile(fakeRunsc, '#!/bin/sh\n[ "$1" = wait ] && echo \'{"exitStatus":0}\'\nexit 0\n', {
      mode: 0o755,
    });
    // conmon's create returns, and kubelet's StartContainer follows, as soon as the shim exits.
    for (let round = 0; round < 10; round++) {
      const control = join(dir, `ctl-${round}`);
      await mkdir(control);
      // stdio ignored: the monitor the shim leaves behind would hold pipes open until it ends.
      const created = spawnSync(
        RUNSC_SHIM,
        [control, fakeRunsc, 'create', '--pid-file', join(control, 'pid'), `c${round}`],
        { stdio: 'ignore' },
      );
      assert.equal(created.status, 0);
      // Right away, with nothing in between: the request fifo must already have its reader.
      closeSync(openSync(join(control, 'start'), constants.O_WRONLY | constants.O_NONBLOCK));
      const monitor = Number(await readFile(join(control, 'pid'), 'utf8'));
      assert.equal(await startThroughShim(control, `c${round}`, monitor), true, `round ${round}`);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

it('after a delete, runsc lock files of the ID without a state file go; everything else stays', async () => {
  const root = await mkdtemp(join(tmpdir(), 'berth-runsc-root-'));
  try {
    const files = [
      'pod_sandbox:pod.lock', // the sandbox's own, orphaned
      'pod_sandbox:gone.lock', // a container of the deleted sandbox, orphaned
      'pod_sandbox:live.lock', // a container of it still known to runsc: kept
      'pod_sandbox:live.state',
      'other_sandbox:x.lock', // another pod's: kept
      'pod2_sandbox:pod.lock.bak', // not a lock file: kept
    ];
    for (const name of files) await writeFile(join(root, name), '');
    await removeStaleRunscLocks(root, 'pod');
    assert.deepEqual((await readdir(root)).sort(), [
      'other_sandbox:x.lock',
      'pod2_sandbox:pod.lock.bak',
      'pod_sandbox:live.lock',
      'pod_sandbox:live.state',
    ]);
    await removeStaleRunscLocks(join(root, 'missing'), 'pod'); // no root yet: nothing to do
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

it('at start-up, lock files without a state file whose IDs no record names go', async () => {
  const root = await mkdtemp(join(tmpdir(), 'berth-runsc-root-'));
  try {
    const files = [
      'old_sandbox:old.lock', // a pod removed by an earlier berth: stale
      'old_sandbox:gone.lock', // one of its containers: stale
      'live_sandbox:live.lock', // a running pod: its state is there
      'live_sandbox:live.state',
      'live_sandbox:undoing.lock', // a pod start-up is still undoing (its record exists)
      'other_sandbox:ctr.lock', // a container record exists in another pod's name
      'notalock.lock', // not runsc's naming: kept
    ];
    for (const name of files) await writeFile(join(root, name), '');
    const removed = await sweepStaleRunscLocks(root, new Set(['live', 'undoing', 'ctr']));
    assert.deepEqual(removed.sort(), ['old_sandbox:gone.lock', 'old_sandbox:old.lock']);
    assert.deepEqual((await readdir(root)).sort(), [
      'live_sandbox:live.lock',
      'live_sandbox:live.state',
      'live_sandbox:undoing.lock',
      'notalock.lock',
      'other_sandbox:ctr.lock',
    ]);
    assert.deepEqual(await sweepStaleRunscLocks(join(root, 'missing'), new Set()), []); // no root yet
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});
