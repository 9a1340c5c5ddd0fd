/**
 * A conmon that dies while berth runs (killed, or the OOM killer's pick)
 * records no exit. berth must notice on its own: the container's end still
 * reaches ListContainers (kubelet's relist) with its real status (berth's
 * process helper, a child subreaper, inherits and reaps it), a stop does not
 * wait for an exit file that never comes, and a pod whose infra ends after
 * its conmon died turns NOTREADY.
 */
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ContainerState, PodSandboxState } from '../../src/generated/api.js';
import { status as grpcStatus } from '@grpc/grpc-js';
import {
  containerConfig,
  execOk,
  grpcCode,
  podConfig,
  processRunning,
  startEnv,
  type Env,
} from './container-fixture.js';

let env: Env;

before(async () => {
  env = await startEnv('conmon-death');
});

after(async () => {
  await env?.cleanup();
});

async function conmonPid(id: string): Promise<number> {
  return Number((await readFile(join(env.berth.dir, 'run', 'conmon', id, 'conmon.pid'), 'utf8')).trim());
}

async function killConmon(id: string): Promise<void> {
  const pid = await conmonPid(id);
  process.kill(pid, 'SIGKILL');
  while (processRunning(pid)) await new Promise((r) => setTimeout(r, 20));
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

it('a container whose conmon was killed: its later end shows in ListContainers; a stop does not wait for an exit file', async () => {
  const rt = env.berth.cri.runtime;
  const config = podConfig(env.work);
  const pod = (await rt.runPodSandbox({ config, runtimeHandler: '' })).podSandboxId;
  const create = async (name: string, command: string[]) => {
    const { containerId } = await rt.createContainer({
      podSandboxId: pod,
      config: containerConfig(name, { command }),
      sandboxConfig: config,
    });
    await rt.startContainer({ containerId });
    return containerId;
  };
  const ending = await create('ends-later', [
    'sh',
    '-c',
    'while [ ! -e /tmp/end ]; do sleep 0.1; done; exit 5',
  ]);
  const stoppable = await create('stopped', [
    'sh',
    '-c',
    'trap "exit 3" TERM; while true; do sleep 0.1; done',
  ]);
  await killConmon(ending);
  await killConmon(stoppable);
  const listed = async (id: string) =>
    (await rt.listContainers({ filter: undefined })).containers.find((c) => c.id === id);
  assert.equal(
    (await listed(ending))?.state,
    ContainerState.CONTAINER_RUNNING,
    'the process outlives its conmon',
  );
  // Its log was conmon's to write: a reopen says why it cannot be done.
  await assert.rejects(
    rt.reopenContainerLog({ containerId: ending }),
    grpcCode(grpcStatus.FAILED_PRECONDITION, /has no conmon/),
  );
  // The container still serves execs without its conmon.
  await execOk(env.berth, ending, ['touch', '/tmp/end']);
  await until('the end of a container without conmon in ListContainers', async () =>
    (await listed(ending))?.state === ContainerState.CONTAINER_EXITED ? true : undefined,
  );
  const st = (await rt.containerStatus({ containerId: ending, verbose: false })).status!;
  // berth's process helper, a child subreaper, inherited the orphan and reaped it: the real status.
  assert.equal(st.exitCode, 5);
  assert.equal(st.reason, 'Error');
  assert.match(st.message, /conmon had died; berth reaped the process/);
  assert.ok(st.finishedAt >= st.startedAt);

  const started = Date.now();
  await rt.stopContainer({ containerId: stoppable, timeout: 10n });
  const took = Date.now() - started;
  // It exits on SIGTERM; before, the stop waited out the timeout and then 30 s for an exit file.
  assert.ok(took < 8_000, `StopContainer took ${took} ms`);
  const stopped = (await rt.containerStatus({ containerId: stoppable, verbose: false })).status!;
  assert.equal(stopped.state, ContainerState.CONTAINER_EXITED);
  assert.equal(stopped.exitCode, 3, 'the exit of its SIGTERM trap, not a guessed 137');
  assert.match(stopped.message, /conmon had died; berth reaped the process/);
  await rt.stopPodSandbox({ podSandboxId: pod });
  await rt.removePodSandbox({ podSandboxId: pod });
});

it('a pod whose infra conmon was killed stays READY while the infra runs, NOTREADY once it ends', async () => {
  const rt = env.berth.cri.runtime;
  const config = podConfig(env.work);
  const pod = (await rt.runPodSandbox({ config, runtimeHandler: '' })).podSandboxId;
  const infraPid = (
    JSON.parse((await rt.podSandboxStatus({ podSandboxId: pod, verbose: true })).info.info) as { pid: number }
  ).pid;
  assert.ok(infraPid > 0);
  await killConmon(pod);
  const state = async () => (await rt.podSandboxStatus({ podSandboxId: pod, verbose: false })).status!.state;
  // Long enough for berth to notice the conmon is gone (its slow poll is 2 s).
  await new Promise((r) => setTimeout(r, 4_500));
  assert.equal(await state(), PodSandboxState.SANDBOX_READY);
  process.kill(infraPid, 'SIGKILL');
  await until('NOTREADY after the infra ended without its conmon', async () =>
    (await state()) === PodSandboxState.SANDBOX_NOTREADY ? true : undefined,
  );
  await rt.stopPodSandbox({ podSandboxId: pod });
  await rt.removePodSandbox({ podSandboxId: pod });
  assert.equal((await rt.listPodSandbox({ filter: undefined })).items.length, 0);
});
