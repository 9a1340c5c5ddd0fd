/**
 * Container lifecycle over the real socket: real berth, runc, conmon, an
 * overlay of an imported busybox image.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { access, readdir, readFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { status as grpcStatus } from '@grpc/grpc-js';
import { run } from '../../src/util/run.js';
import {
  ContainerState,
  ImageSpec,
  LinuxContainerResources,
  NamespaceMode,
  Signal,
} from '../../src/generated/api.js';
import {
  CONFIGURED_IMAGE,
  IMAGE,
  containerConfig,
  grpcCode,
  podConfig,
  startEnv,
  waitForState,
  zombieChildren,
  type Env,
  type ContainerConfigInput,
} from './container-fixture.js';

let env: Env;
let podId: string;
let podLogDir: string;

before(async () => {
  // A second handler: the same runc under another name, with its own state root.
  env = await startEnv('ctr', '\n[runtime.handlers.other]\npath = "/usr/sbin/runc"\n');
  const config = podConfig(env.work);
  podLogDir = config.logDirectory;
  podId = (await env.berth.cri.runtime.runPodSandbox({ config, runtimeHandler: '' })).podSandboxId;
});

after(async () => {
  await env?.cleanup();
});

async function create(name: string, partial: ContainerConfigInput = {}): Promise<string> {
  const config = containerConfig(name, partial);
  const res = await env.berth.cri.runtime.createContainer({
    podSandboxId: podId,
    config,
    sandboxConfig: undefined,
  });
  return res.containerId;
}

async function runToExit(name: string, command: string[], partial: ContainerConfigInput = {}) {
  const id = await create(name, { command, ...partial });
  await env.berth.cri.runtime.startContainer({ containerId: id });
  return {
    id,
    status: await waitForState(env.berth, id, (s) => s.state === ContainerState.CONTAINER_EXITED),
  };
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

describe('container lifecycle', () => {
  it('create, start, CRI log, stop (SIGKILL after the timeout), stop again, remove everything', async () => {
    const rt = env.berth.cri.runtime;
    const id = await create('life', { command: ['sh', '-c', 'echo hello; echo oops >&2; exec sleep 1000'] });
    assert.match(id, /^[0-9a-f]{64}$/);
    let st = (await rt.containerStatus({ containerId: id, verbose: false })).status!;
    assert.equal(st.state, ContainerState.CONTAINER_CREATED);
    assert.ok(st.createdAt > BigInt(Date.now() - 60_000) * 1_000_000n);
    assert.equal(st.startedAt, 0n);
    assert.equal(st.metadata?.name, 'life');
    assert.equal(st.image?.image, IMAGE);
    assert.match(st.imageRef, /^sha256:[0-9a-f]{64}$/);
    assert.equal(st.imageId, st.imageRef);
    assert.equal(st.logPath, join(podLogDir, 'life/0.log'));
    assert.equal(st.user?.linux?.uid, 0n);

    await rt.startContainer({ containerId: id });
    st = (await rt.containerStatus({ containerId: id, verbose: false })).status!;
    assert.equal(st.state, ContainerState.CONTAINER_RUNNING);
    assert.ok(st.startedAt >= st.createdAt);
    await assert.rejects(
      rt.startContainer({ containerId: id }),
      grpcCode(grpcStatus.FAILED_PRECONDITION, /running, not created/),
    );

    // conmon writes the CRI log format: <RFC3339Nano> <stream> <P|F> <text>.
    const deadline = Date.now() + 10_000;
    let log = '';
    while (Date.now() < deadline) {
      log = await readFile(st.logPath, 'utf8').catch(() => '');
      if (log.includes('hello') && log.includes('oops')) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.match(log, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+(Z|[+-]\d\d:\d\d) stdout F hello$/m);
    assert.match(log, /^\S+ stderr F oops$/m);

    const verbose = await rt.containerStatus({ containerId: id, verbose: true });
    const info = JSON.parse(verbose.info.info) as {
      pid: number;
      sandboxID: string;
      runtimeSpec: { process: { args: string[] } };
    };
    assert.ok(info.pid > 0);
    assert.equal(info.sandboxID, podId);
    assert.deepEqual(info.runtimeSpec.process.args, [
      'sh',
      '-c',
      'echo hello; echo oops >&2; exec sleep 1000',
    ]);
    const rootfs = (JSON.parse(verbose.info.info) as { rootfs: string }).rootfs;
    assert.ok(await exists(join(rootfs, 'bin', 'busybox')), 'the overlay is mounted');

    const started = Date.now();
    // sleep as pid 1 ignores SIGTERM: the 1 s grace period ends in SIGKILL.
    await rt.stopContainer({ containerId: id, timeout: 1n });
    assert.ok(Date.now() - started >= 900, 'waited for the grace period');
    st = (await rt.containerStatus({ containerId: id, verbose: false })).status!;
    assert.equal(st.state, ContainerState.CONTAINER_EXITED);
    assert.equal(st.exitCode, 137);
    assert.equal(st.reason, 'Error');
    assert.ok(st.finishedAt >= st.startedAt);
    await rt.stopContainer({ containerId: id, timeout: 10n }); // idempotent
    await rt.stopContainer({ containerId: id, timeout: 0n });

    await rt.removeContainer({ containerId: id });
    await assert.rejects(
      rt.containerStatus({ containerId: id, verbose: false }),
      grpcCode(grpcStatus.NOT_FOUND, new RegExp(id)),
    );
    await rt.removeContainer({ containerId: id }); // idempotent
    assert.equal(await exists(rootfs), false, 'rootfs gone');
    assert.equal(await exists(join(env.berth.dir, 'root', 'containers', id)), false, 'container dir gone');
    assert.equal(await exists(join(env.berth.dir, 'root', 'state', 'containers', `${id}.json`)), false);
    assert.equal(await exists(join(env.berth.dir, 'run', 'conmon', id)), false, 'conmon files gone');
    assert.equal(await exists(join(env.berth.dir, 'run', 'exits', id)), false, 'exit file gone');
    const mounts = await readFile('/proc/self/mountinfo', 'utf8');
    assert.ok(!mounts.includes(id), 'no mount of the container left');
    // The name is free again.
    const again = await create('life', { command: ['true'] });
    await rt.removeContainer({ containerId: again });
  });

  it('CRI log: a long line is split into partial (P) entries ending with a full (F) one', async () => {
    const { id, status } = await runToExit('longline', [
      'sh',
      '-c',
      "head -c 20000 /dev/zero | tr '\\0' a; echo; echo next",
    ]);
    assert.equal(status.exitCode, 0);
    const lines = (await readFile(status.logPath, 'utf8')).trimEnd().split('\n');
    const entries = lines.map((l) => /^(\S+) (stdout|stderr) ([PF]) (.*)$/.exec(l)!);
    assert.ok(entries.every(Boolean), 'every line is <time> <stream> <tag> <text>');
    const tags = entries.map((e) => e[3]).join('');
    assert.match(tags, /^P+FF$/, tags);
    assert.equal(
      entries
        .slice(0, -1)
        .map((e) => e[4])
        .join(''),
      'a'.repeat(20000),
    );
    assert.equal(entries.at(-1)![4], 'next');
    for (const e of entries) assert.ok(!Number.isNaN(Date.parse(e[1])), e[1]);
    await env.berth.cri.runtime.removeContainer({ containerId: id });
  });

  it('stopping a container that was never started marks it exited', async () => {
    const rt = env.berth.cri.runtime;
    const id = await create('never', { command: ['sleep', '1000'] });
    await rt.stopContainer({ containerId: id, timeout: 5n });
    const st = (await rt.containerStatus({ containerId: id, verbose: false })).status!;
    assert.equal(st.state, ContainerState.CONTAINER_EXITED);
    assert.equal(st.startedAt, 0n);
    assert.equal(st.exitCode, 137);
    await assert.rejects(
      rt.startContainer({ containerId: id }),
      grpcCode(grpcStatus.FAILED_PRECONDITION, /exited, not created/),
    );
    await rt.removeContainer({ containerId: id });
  });

  it('exit codes and reasons: Completed, Error, OOMKilled', async () => {
    const ok = await runToExit('ok', ['true']);
    assert.equal(ok.status.exitCode, 0);
    assert.equal(ok.status.reason, 'Completed');
    const bad = await runToExit('bad', ['sh', '-c', 'exit 3']);
    assert.equal(bad.status.exitCode, 3);
    assert.equal(bad.status.reason, 'Error');
    const oom = await runToExit('oom', ['sh', '-c', 'x=a; while true; do x="$x$x"; done'], {
      linux: { resources: { memoryLimitInBytes: 16n * 1024n * 1024n } },
    });
    assert.equal(oom.status.reason, 'OOMKilled');
    assert.equal(oom.status.exitCode, 137);
    for (const c of [ok, bad, oom]) await env.berth.cri.runtime.removeContainer({ containerId: c.id });
  });

  it("uses the image's stop signal, env and working dir", async () => {
    const rt = env.berth.cri.runtime;
    const id = await create('sig', { image: ImageSpec.fromPartial({ image: CONFIGURED_IMAGE }) });
    let st = (await rt.containerStatus({ containerId: id, verbose: false })).status!;
    assert.equal(st.stopSignal, Signal.SIGUSR1);
    await rt.startContainer({ containerId: id });
    const env1 = await rt.execSync({
      containerId: id,
      cmd: ['sh', '-c', 'echo $FROM_IMAGE $(pwd)'],
      timeout: 10n,
    });
    assert.equal(env1.stdout.toString(), 'yes /tmp\n');
    await rt.stopContainer({ containerId: id, timeout: 30n });
    st = (await rt.containerStatus({ containerId: id, verbose: false })).status!;
    assert.equal(st.exitCode, 7, 'the USR1 trap ran');
    assert.match(await readFile(st.logPath, 'utf8'), /stdout F got-usr1/);
    await rt.removeContainer({ containerId: id });
  });
});

describe('ExecSync', () => {
  let id: string;
  before(async () => {
    id = await create('exec', { command: ['sleep', '1000'] });
    await env.berth.cri.runtime.startContainer({ containerId: id });
  });
  after(async () => {
    await env.berth.cri.runtime.removeContainer({ containerId: id });
  });

  it('returns stdout, stderr and the exit code', async () => {
    const res = await env.berth.cri.runtime.execSync({
      containerId: id,
      cmd: ['sh', '-c', 'echo out; echo err >&2; exit 4'],
      timeout: 10n,
    });
    assert.equal(res.stdout.toString(), 'out\n');
    assert.equal(res.stderr.toString(), 'err\n');
    assert.equal(res.exitCode, 4);
  });

  it('kills the command at its timeout and leaves no zombie and no process behind', async () => {
    const started = Date.now();
    await assert.rejects(
      env.berth.cri.runtime.execSync({ containerId: id, cmd: ['sleep', '100'], timeout: 1n }),
      grpcCode(grpcStatus.DEADLINE_EXCEEDED, /timed out after 1s/),
    );
    assert.ok(Date.now() - started < 10_000);
    const ps = await env.berth.cri.runtime.execSync({
      containerId: id,
      cmd: ['ps', '-o', 'args'],
      timeout: 10n,
    });
    assert.doesNotMatch(ps.stdout.toString(), /sleep 100$/m);
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(await zombieChildren(env.berth.process.pid!), []);
  });

  it('caps stdout at 16 MiB', async () => {
    const res = await env.berth.cri.runtime.execSync({
      containerId: id,
      cmd: ['sh', '-c', 'head -c 17825792 /dev/zero; echo done >&2'],
      timeout: 60n,
    });
    // 16 MiB at most, and the whole reply still fits kubelet's 16 MiB message limit.
    assert.ok(
      res.stdout.length <= 16 * 1024 * 1024 && res.stdout.length > 16 * 1024 * 1024 - 4096,
      `${res.stdout.length}`,
    );
    assert.equal(res.stderr.toString(), 'done\n');
    assert.equal(res.exitCode, 0);
  });

  it('refuses a stopped container and an unknown one', async () => {
    const done = await runToExit('exec-done', ['true']);
    await assert.rejects(
      env.berth.cri.runtime.execSync({ containerId: done.id, cmd: ['true'], timeout: 5n }),
      grpcCode(grpcStatus.FAILED_PRECONDITION, /exited, not running/),
    );
    await env.berth.cri.runtime.removeContainer({ containerId: done.id });
    await assert.rejects(
      env.berth.cri.runtime.execSync({ containerId: 'f00dfeed', cmd: ['true'], timeout: 5n }),
      grpcCode(grpcStatus.NOT_FOUND, /f00dfeed/),
    );
  });
});

describe('ListContainers', () => {
  it('filters by ID prefix, state, pod and labels', async () => {
    const rt = env.berth.cri.runtime;
    const a = await create('list-a', { command: ['sleep', '1000'], labels: { app: 'x', tier: 'web' } });
    // Labels as kubelet sets them, with pod values that are not this pod's (critest v1.36
    // "preserving container attributes"): kept as sent, never rewritten.
    const keptLabels = {
      app: 'x',
      'io.kubernetes.container.name': 'list-b',
      'io.kubernetes.pod.name': 'fake-pod-name',
      'io.kubernetes.pod.namespace': 'fake-pod-namespace',
      'io.kubernetes.pod.uid': 'fake-pod-uid',
    };
    const b = await create('list-b', {
      command: ['sleep', '1000'],
      labels: keptLabels,
      annotations: { abc: 'def' },
      metadata: { name: 'list-b', attempt: 3 },
    });
    const statusB = (await rt.containerStatus({ containerId: b, verbose: false })).status!;
    assert.deepEqual(statusB.labels, keptLabels);
    assert.deepEqual(statusB.annotations, { abc: 'def' });
    assert.deepEqual(statusB.metadata, { name: 'list-b', attempt: 3 });
    const listedB = (await rt.listContainers({ filter: undefined })).containers.find((c) => c.id === b)!;
    assert.deepEqual(listedB.labels, keptLabels);
    assert.deepEqual(listedB.annotations, { abc: 'def' });
    assert.deepEqual(listedB.metadata, { name: 'list-b', attempt: 3 });
    await rt.startContainer({ containerId: a });
    const ids = async (filter: Parameters<typeof rt.listContainers>[0]['filter']) =>
      (await rt.listContainers({ filter })).containers.map((c) => c.id).sort();
    assert.deepEqual(
      await ids({ id: a.slice(0, 12), podSandboxId: '', state: undefined, labelSelector: {} }),
      [a],
    );
    assert.deepEqual(
      await ids({
        id: '',
        podSandboxId: '',
        state: { state: ContainerState.CONTAINER_RUNNING },
        labelSelector: { app: 'x' },
      }),
      [a],
    );
    assert.deepEqual(
      await ids({
        id: '',
        podSandboxId: '',
        state: { state: ContainerState.CONTAINER_CREATED },
        labelSelector: {},
      }),
      [b],
    );
    assert.deepEqual(
      await ids({ id: '', podSandboxId: podId, state: undefined, labelSelector: { app: 'x' } }),
      [a, b].sort(),
    );
    assert.deepEqual(
      await ids({ id: '', podSandboxId: '', state: undefined, labelSelector: { tier: 'web' } }),
      [a],
    );
    assert.deepEqual(await ids({ id: '', podSandboxId: 'nope', state: undefined, labelSelector: {} }), []);
    const listed = (await rt.listContainers({ filter: undefined })).containers.find((c) => c.id === a)!;
    assert.equal(listed.podSandboxId, podId);
    assert.equal(listed.metadata?.name, 'list-a');
    assert.equal(listed.image?.image, IMAGE);
    assert.match(listed.imageRef, /^sha256:/);
    // Listed messages are kept between calls (server/list-encoding.ts): the state still follows.
    const listedState = async (id: string) =>
      (await rt.listContainers({ filter: undefined })).containers.find((c) => c.id === id)?.state;
    assert.equal(await listedState(b), ContainerState.CONTAINER_CREATED);
    await rt.startContainer({ containerId: b });
    assert.equal(await listedState(b), ContainerState.CONTAINER_RUNNING);
    await rt.stopContainer({ containerId: b, timeout: 0n });
    assert.equal(await listedState(b), ContainerState.CONTAINER_EXITED);
    assert.equal(await listedState(a), ContainerState.CONTAINER_RUNNING);
    await rt.removeContainer({ containerId: a });
    await rt.removeContainer({ containerId: b });
  });
});

describe('removal and pods', () => {
  it('RemoveContainer of a running container kills it and leaves no file, mount or process', async () => {
    const rt = env.berth.cri.runtime;
    const id = await create('rm-running', { command: ['sleep', '1000'] });
    await rt.startContainer({ containerId: id });
    const info = JSON.parse((await rt.containerStatus({ containerId: id, verbose: true })).info.info) as {
      pid: number;
      conmonPid: number;
    };
    await rt.removeContainer({ containerId: id });
    assert.equal(await exists(`/proc/${info.pid}`), false, 'container process gone');
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline && (await exists(`/proc/${info.conmonPid}`)))
      await new Promise((r) => setTimeout(r, 50));
    assert.equal(await exists(`/proc/${info.conmonPid}`), false, 'its conmon exited');
    for (const path of [
      join(env.berth.dir, 'root', 'containers', id),
      join(env.berth.dir, 'run', 'conmon', id),
      join(env.berth.dir, 'run', 'exits', id),
      join(env.berth.dir, 'run', 'runtimes', 'runc', id),
    ]) {
      assert.equal(await exists(path), false, path);
    }
    assert.ok(!(await readFile('/proc/self/mountinfo', 'utf8')).includes(id));
  });

  it('CreateContainer in a stopped pod is refused naming the pod; a symlinked log dir cannot lead out', async () => {
    const rt = env.berth.cri.runtime;
    const config = podConfig(env.work);
    const pod = (await rt.runPodSandbox({ config, runtimeHandler: '' })).podSandboxId;
    // A link in the pod's log dir pointing outside: the log still lands inside the pod's dir.
    const { mkdir, symlink } = await import('node:fs/promises');
    await mkdir(config.logDirectory, { recursive: true });
    const outside = join(env.work, 'outside');
    await symlink(outside, join(config.logDirectory, 'escape'));
    const id = (
      await rt.createContainer({
        podSandboxId: pod,
        config: containerConfig('linked', { command: ['echo', 'hi'], logPath: 'escape/0.log' }),
        sandboxConfig: config,
      })
    ).containerId;
    const st = (await rt.containerStatus({ containerId: id, verbose: false })).status!;
    assert.ok(st.logPath.startsWith(config.logDirectory + '/'), st.logPath);
    assert.equal(await exists(outside), false, 'nothing created outside the pod log dir');
    await rt.stopPodSandbox({ podSandboxId: pod });
    await assert.rejects(
      rt.startContainer({ containerId: id }),
      grpcCode(grpcStatus.FAILED_PRECONDITION, /exited, not created/),
    );
    await assert.rejects(
      rt.createContainer({ podSandboxId: pod, config: containerConfig('late'), sandboxConfig: config }),
      grpcCode(grpcStatus.FAILED_PRECONDITION, new RegExp(`pod sandbox ${pod}.*not ready`)),
    );
    await rt.removePodSandbox({ podSandboxId: pod });
  });
});

describe('runtime handlers', () => {
  it("a container runs on its pod's handler, under that handler's root", async () => {
    const rt = env.berth.cri.runtime;
    const config = podConfig(env.work);
    const pod = (await rt.runPodSandbox({ config, runtimeHandler: 'other' })).podSandboxId;
    try {
      const id = (
        await rt.createContainer({
          podSandboxId: pod,
          config: containerConfig('on-other', { command: ['sleep', '1000'] }),
          sandboxConfig: config,
        })
      ).containerId;
      await rt.startContainer({ containerId: id });
      const listed = async (handler: string) =>
        (
          await run('/usr/sbin/runc', [
            `--root=${join(env.berth.dir, 'run', 'runtimes', handler)}`,
            'list',
            '-q',
          ])
        ).stdout
          .split('\n')
          .filter(Boolean);
      assert.ok((await listed('other')).includes(id));
      assert.ok(!(await listed('runc')).includes(id));
      const res = await rt.execSync({ containerId: id, cmd: ['echo', 'ok'], timeout: 10n });
      assert.equal(res.stdout.toString(), 'ok\n');
      await rt.stopContainer({ containerId: id, timeout: 0n });
      await rt.removeContainer({ containerId: id });
      assert.ok(!(await listed('other')).includes(id));
    } finally {
      await rt.stopPodSandbox({ podSandboxId: pod });
      await rt.removePodSandbox({ podSandboxId: pod });
    }
  });
});

describe('bad input leaves nothing half-made', () => {
  async function containerDirs(): Promise<string[]> {
    return (await readdir(join(env.berth.dir, 'root', 'containers')).catch(() => [] as string[])).sort();
  }

  it('a duplicate name names the holder; a missing image is NotFound naming it; bad paths are InvalidArgument', async () => {
    const rt = env.berth.cri.runtime;
    const holder = await create('dup', { command: ['true'] });
    const before = await containerDirs();
    await assert.rejects(
      create('dup', { command: ['true'] }),
      grpcCode(grpcStatus.ALREADY_EXISTS, new RegExp(holder)),
    );
    await assert.rejects(
      create('noimage', { image: ImageSpec.fromPartial({ image: 'example.com/no/such:image' }) }),
      grpcCode(grpcStatus.NOT_FOUND, /example\.com\/no\/such:image/),
    );
    await assert.rejects(
      create('relmount', { mounts: [{ containerPath: 'data', hostPath: env.work }] }),
      grpcCode(grpcStatus.INVALID_ARGUMENT, /"data" is not an absolute path/),
    );
    await assert.rejects(
      create('dotmount', { mounts: [{ containerPath: '/data', hostPath: `${env.work}/../etc` }] }),
      grpcCode(grpcStatus.INVALID_ARGUMENT, /contains '\.\.'/),
    );
    await assert.rejects(create('a/b'), grpcCode(grpcStatus.INVALID_ARGUMENT, /"a\/b" is not a valid name/));
    await assert.rejects(
      create('dotlog', { logPath: '../../escape.log' }),
      grpcCode(grpcStatus.INVALID_ARGUMENT, /escapes|'\.\.'/),
    );
    await assert.rejects(
      create('badcmd', { command: ['/no/such/binary'] }),
      (err: { code: number; details: string }) => /no\/such\/binary/.test(err.details),
    );
    await assert.rejects(
      rt.createContainer({ podSandboxId: 'f00f00', config: containerConfig('x'), sandboxConfig: undefined }),
      grpcCode(grpcStatus.NOT_FOUND, /f00f00/),
    );
    assert.deepEqual(await containerDirs(), before, 'no container storage left by failed creates');
    const names = (await rt.listContainers({ filter: undefined })).containers.map((c) => c.metadata?.name);
    assert.deepEqual(
      names.filter((n) => ['noimage', 'relmount', 'dotmount', 'dotlog', 'badcmd'].includes(n!)),
      [],
    );
    // Failed names were released: the same name works now.
    const ok = await create('badcmd', { command: ['true'] });
    await rt.removeContainer({ containerId: ok });
    await rt.removeContainer({ containerId: holder });
  });

  it('unknown IDs: status/start NotFound naming the ID; stop and remove succeed (idempotent)', async () => {
    const rt = env.berth.cri.runtime;
    await assert.rejects(
      rt.containerStatus({ containerId: 'abc123', verbose: false }),
      grpcCode(grpcStatus.NOT_FOUND, /abc123/),
    );
    await assert.rejects(
      rt.startContainer({ containerId: 'abc123' }),
      grpcCode(grpcStatus.NOT_FOUND, /abc123/),
    );
    await assert.rejects(
      rt.execSync({ containerId: 'abc123', cmd: ['true'], timeout: 1n }),
      grpcCode(grpcStatus.NOT_FOUND, /abc123/),
    );
    await rt.stopContainer({ containerId: 'abc123', timeout: 0n });
    await rt.removeContainer({ containerId: 'abc123' });
  });

  it('RemoveImage refuses an image a container uses, naming the container', async () => {
    const rt = env.berth.cri.runtime;
    const id = await create('user', { command: ['true'] });
    await assert.rejects(
      env.berth.cri.image.removeImage({ image: ImageSpec.fromPartial({ image: IMAGE }) }),
      grpcCode(grpcStatus.FAILED_PRECONDITION, new RegExp(`in use by container ${id}`)),
    );
    await rt.removeContainer({ containerId: id });
  });
});

describe('resources, logs, stats', () => {
  it('UpdateContainerResources changes the cgroup memory limit', async () => {
    const rt = env.berth.cri.runtime;
    const id = await create('upd', {
      command: ['sleep', '1000'],
      linux: { resources: { memoryLimitInBytes: 64n << 20n } },
    });
    await rt.startContainer({ containerId: id });
    const info = JSON.parse((await rt.containerStatus({ containerId: id, verbose: true })).info.info) as {
      pid: number;
    };
    const limit = async () => {
      const cg = await readFile(`/proc/${info.pid}/cgroup`, 'utf8');
      const memory = /^\d+:memory:(.*)$/m.exec(cg);
      if (memory) return readFile(join('/sys/fs/cgroup/memory', memory[1], 'memory.limit_in_bytes'), 'utf8');
      const unified = /^0::(.*)$/m.exec(cg)!;
      return readFile(join('/sys/fs/cgroup', unified[1], 'memory.max'), 'utf8');
    };
    assert.equal((await limit()).trim(), String(64 << 20));
    await rt.updateContainerResources({
      containerId: id,
      linux: LinuxContainerResources.fromPartial({ memoryLimitInBytes: 96n << 20n }),
      windows: undefined,
      annotations: {},
    });
    assert.equal((await limit()).trim(), String(96 << 20));
    const st = (await rt.containerStatus({ containerId: id, verbose: false })).status!;
    assert.equal(st.resources?.linux?.memoryLimitInBytes, 96n << 20n);
    await rt.removeContainer({ containerId: id });
  });

  it('ReopenContainerLog: conmon writes to a new file after rotation', async () => {
    const rt = env.berth.cri.runtime;
    const id = await create('rot', {
      command: ['sh', '-c', 'i=0; while true; do echo line$i; i=$((i+1)); sleep 0.05; done'],
    });
    await rt.startContainer({ containerId: id });
    const st = (await rt.containerStatus({ containerId: id, verbose: false })).status!;
    await waitForLog(st.logPath, /line3/);
    await rename(st.logPath, `${st.logPath}.1`);
    await rt.reopenContainerLog({ containerId: id });
    await waitForLog(st.logPath, /stdout F line\d+/);
    await rt.stopContainer({ containerId: id, timeout: 0n });
    await assert.rejects(
      rt.reopenContainerLog({ containerId: id }),
      grpcCode(grpcStatus.FAILED_PRECONDITION, /not running/),
    );
    await rt.removeContainer({ containerId: id });
  });

  it('ContainerStats and ListContainerStats: CPU rate, working set, writable layer', async () => {
    const rt = env.berth.cri.runtime;
    const id = await create('busy', {
      command: [
        'sh',
        '-c',
        'dd if=/dev/zero of=/tmp/fill bs=1M count=8 2>/dev/null; touch /tmp/done; while true; do :; done',
      ],
    });
    await rt.startContainer({ containerId: id });
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      const r = await rt.execSync({ containerId: id, cmd: ['ls', '/tmp/done'], timeout: 5n });
      if (r.exitCode === 0) break;
      await new Promise((r2) => setTimeout(r2, 100));
    }
    const { stats } = await rt.containerStats({ containerId: id });
    assert.equal(stats?.attributes?.id, id);
    const cores = Number(stats!.cpu!.usageNanoCores!.value) / 1e9;
    // A busy loop: clearly above idle, at most one core (the machine may be shared).
    assert.ok(cores > 0.05 && cores < 1.2, `busy loop CPU rate ${cores}`);
    assert.ok(stats!.cpu!.usageCoreNanoSeconds!.value > 0n);
    assert.ok(stats!.memory!.workingSetBytes!.value > 100_000n);
    assert.ok(stats!.memory!.usageBytes!.value >= stats!.memory!.workingSetBytes!.value);
    // Swap accounting (memsw on v1, memory.swap.* on v2) where the host has it.
    const hasSwapAccounting = await exists('/sys/fs/cgroup/memory/memory.memsw.usage_in_bytes');
    if (hasSwapAccounting) assert.ok(stats!.swap?.swapUsageBytes !== undefined, 'swap usage reported');
    const layer = stats!.writableLayer!;
    assert.ok(layer.usedBytes!.value >= 8n << 20n, `8 MiB written, got ${layer.usedBytes!.value}`);
    assert.ok(layer.inodesUsed!.value >= 3n);
    assert.ok(layer.fsId!.mountpoint.startsWith('/'));
    const list = await rt.listContainerStats({ filter: { id: '', podSandboxId: podId, labelSelector: {} } });
    assert.ok(list.stats.some((s) => s.attributes?.id === id));
    // A later call's rate is the usage between the two samples over their distance.
    await new Promise((r) => setTimeout(r, 500));
    const again = (await rt.containerStats({ containerId: id })).stats!;
    const expected =
      Number(again.cpu!.usageCoreNanoSeconds!.value - stats!.cpu!.usageCoreNanoSeconds!.value) /
      Number(again.cpu!.timestamp - stats!.cpu!.timestamp);
    const rate = Number(again.cpu!.usageNanoCores!.value) / 1e9;
    assert.ok(Math.abs(rate - expected) < 0.05 + expected * 0.1, `rate ${rate} vs usage delta ${expected}`);
    assert.ok(rate > 0.05, `busy loop CPU rate ${rate}`);
    await rt.removeContainer({ containerId: id });
  });

  it('PodSandboxStats of a pod on the CNI bridge: network counters, CPU, memory, containers', async () => {
    const rt = env.berth.cri.runtime;
    const config = podConfig(env.work, { hostNetwork: false, labels: { stats: 'yes' } });
    const pod = (await rt.runPodSandbox({ config, runtimeHandler: '' })).podSandboxId;
    const c = (
      await rt.createContainer({
        podSandboxId: pod,
        config: containerConfig('net', {
          command: ['sleep', '1000'],
          linux: { securityContext: { namespaceOptions: { network: NamespaceMode.POD } } },
        }),
        sandboxConfig: config,
      })
    ).containerId;
    await rt.startContainer({ containerId: c });
    const { stats } = await rt.podSandboxStats({ podSandboxId: pod });
    assert.equal(stats?.attributes?.id, pod);
    const net = stats!.linux!.network!;
    assert.equal(net.defaultInterface?.name, 'eth0');
    assert.ok(net.defaultInterface!.txBytes!.value > 0n || net.defaultInterface!.rxBytes!.value > 0n);
    assert.ok(stats!.linux!.memory!.workingSetBytes!.value > 0n);
    assert.ok(stats!.linux!.cpu!.usageCoreNanoSeconds!.value > 0n);
    assert.deepEqual(
      stats!.linux!.containers.map((s) => s.attributes?.id),
      [c],
    );
    assert.equal(stats!.linux!.process?.processCount?.value, 2n, 'the pause process and sleep');
    const listed = await rt.listPodSandboxStats({ filter: { id: '', labelSelector: { stats: 'yes' } } });
    assert.deepEqual(
      listed.stats.map((s) => s.attributes?.id),
      [pod],
    );
    await rt.stopPodSandbox({ podSandboxId: pod });
    const st = (await rt.containerStatus({ containerId: c, verbose: false })).status!;
    assert.equal(st.state, ContainerState.CONTAINER_EXITED, 'stopping the pod stopped its container');
    await rt.removePodSandbox({ podSandboxId: pod });
    await assert.rejects(
      rt.containerStatus({ containerId: c, verbose: false }),
      grpcCode(grpcStatus.NOT_FOUND),
    );
  });
});

describe('pod stats from the cgroup parent', () => {
  const parent = `/berthtest-${process.pid}-${Date.now().toString(36)}`;
  after(async () => {
    const { readdir: list, rmdir } = await import('node:fs/promises');
    const remove = async (dir: string): Promise<void> => {
      for (const e of await list(dir, { withFileTypes: true }).catch(() => [])) {
        if (e.isDirectory()) await remove(join(dir, e.name));
      }
      await rmdir(dir).catch(() => undefined);
    };
    for (const hierarchy of await list('/sys/fs/cgroup'))
      await remove(join('/sys/fs/cgroup', hierarchy, parent));
  });

  it('PodSandboxStats reads CPU, memory and process count of the pod cgroup', async () => {
    const rt = env.berth.cri.runtime;
    const config = podConfig(env.work);
    config.linux!.cgroupParent = parent;
    const pod = (await rt.runPodSandbox({ config, runtimeHandler: '' })).podSandboxId;
    try {
      const c = (
        await rt.createContainer({
          podSandboxId: pod,
          config: containerConfig('in-parent', { command: ['sh', '-c', 'while true; do :; done'] }),
          sandboxConfig: config,
        })
      ).containerId;
      await rt.startContainer({ containerId: c });
      const { stats } = await rt.podSandboxStats({ podSandboxId: pod });
      const linux = stats!.linux!;
      assert.ok(
        linux.process!.processCount!.value >= 2n,
        `infra and container: ${linux.process!.processCount!.value}`,
      );
      assert.ok(linux.memory!.workingSetBytes!.value > 0n);
      assert.ok(linux.cpu!.usageNanoCores!.value > 0n);
      // The pod's cgroup holds the container's: at least as much CPU time as the container alone.
      const own = (await rt.containerStats({ containerId: c })).stats!.cpu!.usageCoreNanoSeconds!.value;
      const podAgain = (await rt.podSandboxStats({ podSandboxId: pod })).stats!.linux!.cpu!;
      assert.ok(podAgain.usageCoreNanoSeconds!.value >= own);
    } finally {
      await rt.stopPodSandbox({ podSandboxId: pod });
      await rt.removePodSandbox({ podSandboxId: pod });
    }
  });
});

async function waitForLog(path: string, pattern: RegExp): Promise<string> {
  const deadline = Date.now() + 10_000;
  let text = '';
  while (Date.now() < deadline) {
    text = await readFile(path, 'utf8').catch(() => '');
    if (pattern.test(text)) return text;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`log ${path} never matched ${pattern}: ${text.slice(-500)}`);
}
