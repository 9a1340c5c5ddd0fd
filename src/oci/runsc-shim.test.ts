import { it } from 'node:test';
import assert from 'node:assert/strict';
import { RUNSC_SHIM, conmonRuntime } from './runsc-shim.js';
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
