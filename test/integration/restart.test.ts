/**
 * Restart safety: berth is SIGKILLed while containers run; the next berth
 * finds every container in its right state, running ones still under the
 * same conmon, exits that happened meanwhile recorded, nothing re-created,
 * and half-made containers of an interrupted CreateContainer cleaned.
 */
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { status as grpcStatus } from '@grpc/grpc-js';
import { startBerth } from '../helpers/berth-process.js';
import { ContainerState } from '../../src/generated/api.js';
import { run } from '../../src/util/run.js';
import {
  containerConfig,
  grpcCode,
  killLeftovers,
  podConfig,
  processRunning,
  startEnv,
  waitForState,
  type Env,
} from './container-fixture.js';

let env: Env;

before(async () => {
  env = await startEnv('restart');
});

after(async () => {
  await env?.cleanup();
});

async function restart(): Promise<void> {
  await env.berth.kill();
  env.berth = await startBerth({ dir: env.berth.dir });
}

interface Verbose {
  pid: number;
  conmonPid: number;
}

async function verbose(id: string): Promise<Verbose> {
  return JSON.parse(
    (await env.berth.cri.runtime.containerStatus({ containerId: id, verbose: true })).info.info,
  ) as Verbose;
}

it('after SIGKILL: running stay running under the same conmon, exits meanwhile are recorded, nothing is re-created', async () => {
  let rt = env.berth.cri.runtime;
  const config = podConfig(env.work);
  const pod = (await rt.runPodSandbox({ config, runtimeHandler: '' })).podSandboxId;
  const make = async (name: string, command: string[], start: boolean) => {
    const id = (
      await rt.createContainer({
        podSandboxId: pod,
        config: containerConfig(name, { command }),
        sandboxConfig: config,
      })
    ).containerId;
    if (start) await rt.startContainer({ containerId: id });
    return id;
  };
  const running = await make('running', ['sleep', '1000'], true);
  const exitsLater = await make('exits-later', ['sh', '-c', 'sleep 2; exit 5'], true);
  const created = await make('created', ['sh', '-c', 'echo started-after-restart; sleep 1000'], false);
  const done = await make('done', ['true'], true);
  await waitForState(env.berth, done, (s) => s.state === ContainerState.CONTAINER_EXITED);
  const before = await verbose(running);
  assert.ok(before.pid > 0 && before.conmonPid > 0);
  const beforeList = (await rt.listContainers({ filter: undefined })).containers;

  await env.berth.kill();
  // A StartContainer cut short after the runtime started the process: the record does not say so yet.
  const recordPath = join(env.berth.dir, 'root', 'state', 'containers', `${running}.json`);
  const record = JSON.parse(await readFile(recordPath, 'utf8')) as { startedAtNs?: string };
  const startedAtNs = BigInt(record.startedAtNs!);
  delete record.startedAtNs;
  await writeFile(recordPath, JSON.stringify(record));
  // exits-later ends while no berth runs.
  await new Promise((r) => setTimeout(r, 3000));
  env.berth = await startBerth({ dir: env.berth.dir });
  rt = env.berth.cri.runtime;

  const list = (await rt.listContainers({ filter: undefined })).containers;
  assert.deepEqual(list.map((c) => c.id).sort(), beforeList.map((c) => c.id).sort());
  const state = (id: string) => list.find((c) => c.id === id)!.state;
  assert.equal(state(running), ContainerState.CONTAINER_RUNNING);
  assert.equal(state(exitsLater), ContainerState.CONTAINER_EXITED);
  assert.equal(state(created), ContainerState.CONTAINER_CREATED);
  assert.equal(state(done), ContainerState.CONTAINER_EXITED);

  const late = (await rt.containerStatus({ containerId: exitsLater, verbose: false })).status!;
  assert.equal(late.exitCode, 5);
  assert.equal(late.reason, 'Error');
  assert.ok(late.finishedAt > late.startedAt + 1_500_000_000n, 'finished about 2 s after it started');
  const ok = (await rt.containerStatus({ containerId: done, verbose: false })).status!;
  assert.equal(ok.exitCode, 0);
  assert.equal(ok.reason, 'Completed');

  // The runtime's word wins over the record: running, started about when it really started.
  const adopted = (await rt.containerStatus({ containerId: running, verbose: false })).status!;
  assert.ok(
    adopted.startedAt > startedAtNs - 1_000_000_000n && adopted.startedAt < startedAtNs + 1_000_000_000n,
    `started ${adopted.startedAt} vs ${startedAtNs}`,
  );

  // The same processes, not new ones.
  const after = await verbose(running);
  assert.equal(after.pid, before.pid);
  assert.equal(after.conmonPid, before.conmonPid);
  assert.ok(processRunning(after.conmonPid));
  const exec = await rt.execSync({ containerId: running, cmd: ['echo', 'still here'], timeout: 10n });
  assert.equal(exec.stdout.toString(), 'still here\n');

  // The created one starts now; its log comes through its original conmon.
  await rt.startContainer({ containerId: created });
  const st = (await rt.containerStatus({ containerId: created, verbose: false })).status!;
  assert.equal(st.state, ContainerState.CONTAINER_RUNNING);
  const deadline = Date.now() + 10_000;
  while (
    Date.now() < deadline &&
    !(await readFile(st.logPath, 'utf8').catch(() => '')).includes('started-after')
  ) {
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.match(await readFile(st.logPath, 'utf8'), /stdout F started-after-restart/);

  // Exits after the restart are seen by the new berth's watch.
  await rt.stopContainer({ containerId: running, timeout: 0n });
  const stopped = (await rt.containerStatus({ containerId: running, verbose: false })).status!;
  assert.equal(stopped.exitCode, 137);
  // Names survive the restart: a duplicate still names its holder.
  await assert.rejects(
    rt.createContainer({ podSandboxId: pod, config: containerConfig('running'), sandboxConfig: config }),
    grpcCode(grpcStatus.ALREADY_EXISTS, new RegExp(running)),
  );
  await rt.stopPodSandbox({ podSandboxId: pod });
  await rt.removePodSandbox({ podSandboxId: pod });
  assert.deepEqual((await rt.listContainers({ filter: undefined })).containers, []);
});

it('after a reboot (processes, mounts and run_root gone): pods not ready, containers exited, all removable, IPs released', async () => {
  let rt = env.berth.cri.runtime;
  const config = podConfig(env.work, { hostNetwork: false });
  const pod = (await rt.runPodSandbox({ config, runtimeHandler: '' })).podSandboxId;
  const ip = (await rt.podSandboxStatus({ podSandboxId: pod, verbose: false })).status!.network!.ip;
  assert.ok(ip, 'the pod has an address');
  const make = async (name: string, start: boolean) => {
    const id = (
      await rt.createContainer({
        podSandboxId: pod,
        config: containerConfig(name, { command: ['sleep', '1000'] }),
        sandboxConfig: config,
      })
    ).containerId;
    if (start) await rt.startContainer({ containerId: id });
    return id;
  };
  const running = await make('was-running', true);
  const created = await make('was-created', false);

  // The reboot: every process and mount of the node is gone, and so is the tmpfs run_root;
  // the records under root and the CNI plugin's IPAM store (on disk) remain.
  await env.berth.kill();
  await killLeftovers(env.berth.dir);
  await rm(join(env.berth.dir, 'run'), { recursive: true, force: true });
  env.berth = await startBerth({ dir: env.berth.dir });
  rt = env.berth.cri.runtime;

  const pods = (await rt.listPodSandbox({ filter: undefined })).items;
  assert.deepEqual(
    pods.map((p) => [p.id, p.state]),
    [[pod, 1 /* SANDBOX_NOTREADY */]],
  );
  const list = (await rt.listContainers({ filter: undefined })).containers;
  const state = (id: string) => list.find((c) => c.id === id)?.state;
  assert.equal(state(running), ContainerState.CONTAINER_EXITED);
  assert.notEqual(state(created), ContainerState.CONTAINER_RUNNING);
  const gone = (await rt.containerStatus({ containerId: running, verbose: false })).status!;
  assert.ok(gone.finishedAt > 0n, 'an exited container has a finish time');
  assert.notEqual(gone.exitCode, 0, 'not reported as a clean exit');

  // kubelet's next steps: stop and remove the old pod, run a new one with the same name.
  const held = async () =>
    (await readdir(join(env.work, 'ipam'), { recursive: true })).some((f) => f.endsWith(`/${ip}`));
  assert.ok(await held(), `host-local's on-disk store holds ${ip} across the reboot`);
  await rt.stopPodSandbox({ podSandboxId: pod });
  await rt.removePodSandbox({ podSandboxId: pod });
  assert.deepEqual((await rt.listContainers({ filter: undefined })).containers, []);
  assert.ok(!(await held()), `the pod's address ${ip} is released`);
  const again = (await rt.runPodSandbox({ config, runtimeHandler: '' })).podSandboxId;
  const st = (await rt.podSandboxStatus({ podSandboxId: again, verbose: false })).status!;
  assert.equal(st.state, 0 /* SANDBOX_READY */);
  await rt.stopPodSandbox({ podSandboxId: again });
  await rt.removePodSandbox({ podSandboxId: again });
});

it('a container whose conmon died while berth was down still gets an exit when it ends', async () => {
  let rt = env.berth.cri.runtime;
  const config = podConfig(env.work);
  const pod = (await rt.runPodSandbox({ config, runtimeHandler: '' })).podSandboxId;
  const id = (
    await rt.createContainer({
      podSandboxId: pod,
      config: containerConfig('orphan', { command: ['sleep', '1000'] }),
      sandboxConfig: config,
    })
  ).containerId;
  await rt.startContainer({ containerId: id });
  const stoppable = (
    await rt.createContainer({
      podSandboxId: pod,
      config: containerConfig('orphan-stop', { command: ['sleep', '1000'] }),
      sandboxConfig: config,
    })
  ).containerId;
  await rt.startContainer({ containerId: stoppable });
  const { pid, conmonPid } = await verbose(id);
  const second = await verbose(stoppable);
  await env.berth.kill();
  for (const p of [conmonPid, second.conmonPid]) {
    process.kill(p, 'SIGKILL');
    while (processRunning(p)) await new Promise((r) => setTimeout(r, 20));
  }
  env.berth = await startBerth({ dir: env.berth.dir });
  rt = env.berth.cri.runtime;
  let st = (await rt.containerStatus({ containerId: id, verbose: false })).status!;
  assert.equal(st.state, ContainerState.CONTAINER_RUNNING, 'the process outlived its conmon');
  process.kill(pid, 'SIGKILL');
  st = await waitForState(env.berth, id, (s) => s.state === ContainerState.CONTAINER_EXITED);
  assert.equal(st.exitCode, 255);
  assert.match(st.message, /no conmon/);
  // StopContainer works through the runtime alone, without waiting for an exit file that never comes.
  const started = Date.now();
  await rt.stopContainer({ containerId: stoppable, timeout: 0n });
  assert.ok(Date.now() - started < 10_000, `stop took ${Date.now() - started} ms`);
  const stopped = (await rt.containerStatus({ containerId: stoppable, verbose: false })).status!;
  assert.equal(stopped.state, ContainerState.CONTAINER_EXITED);
  assert.equal(processRunning(second.pid), false);
  assert.match(stopped.message, /without a conmon/);
  await rt.stopPodSandbox({ podSandboxId: pod });
  await rt.removePodSandbox({ podSandboxId: pod });
});

it('a CreateContainer interrupted by SIGKILL leaves nothing half-made after the restart', async () => {
  const root = join(env.berth.dir, 'root');
  const runcRoot = join(env.berth.dir, 'run', 'runtimes', 'runc');
  let interrupted = 0;
  for (const delayMs of [5, 30, 60, 90, 120, 250]) {
    const rt = env.berth.cri.runtime;
    const config = podConfig(env.work);
    const pod = (await rt.runPodSandbox({ config, runtimeHandler: '' })).podSandboxId;
    const pending = rt
      .createContainer({
        podSandboxId: pod,
        config: containerConfig('victim', { command: ['sleep', '1000'] }),
        sandboxConfig: config,
      })
      .catch(() => undefined);
    await new Promise((r) => setTimeout(r, delayMs));
    await restart();
    await pending;
    if (env.berth.logs().includes('creation was interrupted')) interrupted++;
    const list = (await env.berth.cri.runtime.listContainers({ filter: undefined })).containers;
    const ids = new Set(list.map((c) => c.id));
    // Whatever survived is complete; whatever did not left no trace.
    for (const c of list) {
      const st = (await env.berth.cri.runtime.containerStatus({ containerId: c.id, verbose: false })).status!;
      assert.equal(st.state, ContainerState.CONTAINER_CREATED, `delay ${delayMs}`);
    }
    const dirs = await readdir(join(root, 'containers')).catch(() => [] as string[]);
    assert.deepEqual(
      dirs.filter((d) => !ids.has(d)),
      [],
      `storage of unlisted containers (delay ${delayMs})`,
    );
    const records = (await readdir(join(root, 'state', 'containers'))).filter((f) => f.endsWith('.json'));
    assert.deepEqual(
      records.map((f) => f.slice(0, -5)).filter((d) => !ids.has(d)),
      [],
      `records (delay ${delayMs})`,
    );
    const pods = new Set(
      (await env.berth.cri.runtime.listPodSandbox({ filter: undefined })).items.map((p) => p.id),
    );
    const runc = await run('/usr/sbin/runc', [`--root=${runcRoot}`, 'list', '-q']);
    const strays = runc.stdout.split('\n').filter((id) => id && !ids.has(id) && !pods.has(id));
    assert.deepEqual(strays, [], `runtime containers nobody lists (delay ${delayMs})`);
    const mounts = await readFile('/proc/self/mountinfo', 'utf8');
    const strayMounts = mounts
      .split('\n')
      .map((l) => l.split(' ')[4] ?? '')
      .filter((m) => m.startsWith(join(root, 'containers')) && !ids.has(m.split('/').at(-2)!));
    assert.deepEqual(strayMounts, [], `overlay mounts of unlisted containers (delay ${delayMs})`);
    // The name is usable again unless the container exists.
    const again = await env.berth.cri.runtime
      .createContainer({
        podSandboxId: pod,
        config: containerConfig('victim', { command: ['true'] }),
        sandboxConfig: config,
      })
      .then(
        (r) => r.containerId,
        (err: { code: number; details: string }) => err,
      );
    if (list.length === 0) assert.equal(typeof again, 'string', `name released (delay ${delayMs})`);
    else assert.equal((again as { code: number }).code, grpcStatus.ALREADY_EXISTS);
    await env.berth.cri.runtime.stopPodSandbox({ podSandboxId: pod });
    await env.berth.cri.runtime.removePodSandbox({ podSandboxId: pod });
  }
  // Timing decides which runs catch a create half-way; report how many did.
  process.stdout.write(`# ${interrupted} of 6 kills interrupted a CreateContainer\n`);
});
