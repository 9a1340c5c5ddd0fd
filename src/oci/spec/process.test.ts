import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ContainerConfig, Signal } from '../../generated/api.js';
import type { ImageConfigFile } from '../../image/types.js';
import { InvalidArgumentError } from '../../errors.js';
import { containerEnv, mergeEnv, normalizeSignal, processArgs, stopSignalOf, workingDir } from './process.js';

/** An env value as kubelet sends it (bytes). */
const utf8 = (text: string): Buffer => Buffer.from(text);

function image(config: ImageConfigFile['config']): ImageConfigFile {
  return { architecture: 'amd64', os: 'linux', config, rootfs: { type: 'layers', diff_ids: [] } };
}

const img = image({
  Entrypoint: ['/entry', '-e'],
  Cmd: ['cmd1', 'cmd2'],
  Env: ['PATH=/img/bin', 'A=image', 'B=image'],
});

test('command/args merge as Kubernetes defines it', () => {
  // Neither: image entrypoint + cmd.
  assert.deepEqual(processArgs({ command: [], args: [] }, img, 'c'), ['/entry', '-e', 'cmd1', 'cmd2']);
  // args only: replaces CMD, keeps ENTRYPOINT.
  assert.deepEqual(processArgs({ command: [], args: ['x'] }, img, 'c'), ['/entry', '-e', 'x']);
  // command only: replaces ENTRYPOINT and drops CMD.
  assert.deepEqual(processArgs({ command: ['/bin/sh'], args: [] }, img, 'c'), ['/bin/sh']);
  // both: neither of the image's.
  assert.deepEqual(processArgs({ command: ['/bin/sh'], args: ['-c', 'true'] }, img, 'c'), [
    '/bin/sh',
    '-c',
    'true',
  ]);
  // ENTRYPOINT [""] clears the entrypoint.
  assert.deepEqual(processArgs({ command: [], args: [] }, image({ Entrypoint: [''], Cmd: ['sh'] }), 'c'), [
    'sh',
  ]);
  // CMD only image.
  assert.deepEqual(processArgs({ command: [], args: [] }, image({ Cmd: ['sh'] }), 'c'), ['sh']);
  assert.deepEqual(processArgs({ command: [], args: ['a'] }, image({ Cmd: ['sh'], Entrypoint: null }), 'c'), [
    'a',
  ]);
});

test('no command anywhere is an InvalidArgument naming the container', () => {
  assert.throws(
    () => processArgs({ command: [], args: [] }, image({}), 'container "web"'),
    (err: Error) => err instanceof InvalidArgumentError && /container "web": no command/.test(err.message),
  );
});

test('env: PATH default, HOSTNAME, image env, then config env; later wins in place', () => {
  const config = ContainerConfig.fromPartial({
    envs: [
      { key: 'B', value: utf8('config') },
      { key: 'C', value: utf8('x=y') },
    ],
  });
  const env = containerEnv(config, img, { hostname: 'pod1', home: '/root' }, 'c');
  assert.deepEqual(env, ['PATH=/img/bin', 'HOSTNAME=pod1', 'A=image', 'B=config', 'C=x=y', 'HOME=/root']);
  const noPath = containerEnv(
    ContainerConfig.fromPartial({ envs: [{ key: 'HOME', value: utf8('/h') }] }),
    image({}),
    { hostname: 'h', home: '/root' },
    'c',
  );
  assert.ok(noPath.includes('PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'));
  assert.ok(noPath.includes('HOME=/h'));
  assert.ok(!noPath.includes('HOME=/root'));
  assert.throws(
    () =>
      containerEnv(
        ContainerConfig.fromPartial({ envs: [{ key: 'A=B', value: utf8('') }] }),
        img,
        { hostname: 'h', home: '/' },
        'c',
      ),
    InvalidArgumentError,
  );
  assert.deepEqual(mergeEnv(['A=1', 'B=2'], ['A=3']), ['A=3', 'B=2']);
});

test('env values are bytes: UTF-8 kept, other bytes become U+FFFD, a NUL is refused naming the variable', () => {
  const env = containerEnv(
    ContainerConfig.fromPartial({
      envs: [
        { key: 'TEXT', value: utf8('grüße ✓') },
        { key: 'BINARY', value: Buffer.from([0x61, 0xff, 0xfe, 0x62]) },
      ],
    }),
    img,
    { hostname: 'h', home: '/' },
    'c',
  );
  assert.ok(env.includes('TEXT=grüße ✓'));
  assert.ok(env.includes('BINARY=a\ufffd\ufffdb'));
  assert.throws(
    () =>
      containerEnv(
        ContainerConfig.fromPartial({ envs: [{ key: 'TOKEN', value: Buffer.from([0x61, 0, 0x62]) }] }),
        img,
        { hostname: 'h', home: '/' },
        'container "web"',
      ),
    (err: Error) =>
      err instanceof InvalidArgumentError &&
      /container "web": environment variable TOKEN holds a NUL/.test(err.message),
  );
});

test('working dir: config, image, else /; relative is refused', () => {
  assert.equal(workingDir({ workingDir: '/srv/' }, img, 'c'), '/srv/');
  assert.equal(workingDir({ workingDir: '' }, image({ WorkingDir: '/app' }), 'c'), '/app');
  assert.equal(workingDir({ workingDir: '' }, image({}), 'c'), '/');
  assert.throws(() => workingDir({ workingDir: 'srv' }, img, 'c'), InvalidArgumentError);
});

test('stop signal from the config, else the image, else SIGTERM', () => {
  assert.equal(stopSignalOf(Signal.SIGINT, image({ StopSignal: 'SIGQUIT' })), 'SIGINT');
  assert.equal(stopSignalOf(Signal.RUNTIME_DEFAULT, image({ StopSignal: 'SIGQUIT' })), 'SIGQUIT');
  assert.equal(stopSignalOf(Signal.RUNTIME_DEFAULT, image({ StopSignal: 'usr1' })), 'SIGUSR1');
  assert.equal(stopSignalOf(Signal.RUNTIME_DEFAULT, image({ StopSignal: '9' })), 'SIGKILL');
  assert.equal(stopSignalOf(Signal.RUNTIME_DEFAULT, image({})), 'SIGTERM');
  assert.equal(stopSignalOf(Signal.SIGRTMINPLUS3, image({})), '37');
  assert.equal(normalizeSignal('SIGRTMIN+3'), '37');
  assert.equal(normalizeSignal('RTMAX-1'), '63');
  assert.equal(normalizeSignal('NOPE'), undefined);
  assert.throws(
    () => stopSignalOf(Signal.RUNTIME_DEFAULT, image({ StopSignal: 'SIGNOPE' }), 'c'),
    InvalidArgumentError,
  );
});
