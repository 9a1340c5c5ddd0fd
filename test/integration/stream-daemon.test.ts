/**
 * Exec, Attach and PortForward over berth's real socket: the RPCs validate
 * and hand out URLs on the daemon's streaming server; kubectl (through the
 * API shim) then uses them against containers and a pod made through the CRI.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { connect } from 'node:net';
import { request } from 'node:http';
import { status } from '@grpc/grpc-js';
import {
  containerConfig,
  grpcCode,
  podConfig,
  startEnv,
  waitForState,
  type Env,
} from './container-fixture.js';
import { startKubeShim, type KubeShim } from '../helpers/kube-shim.js';
import { run } from '../../src/util/run.js';
import { ContainerState, NamespaceMode, type ContainerStatus } from '../../src/generated/api.js';

let env: Env;
let podId: string;
let sleeper: string;
let reader: string;
let shim: KubeShim;
const SECRET = 'stream-secret-4f1d9c0e';

async function container(
  name: string,
  command: string[],
  extra: { stdin?: boolean; stdinOnce?: boolean } = {},
  // Running by default; a command that ends at once may be past it by the first look.
  until: (s: ContainerStatus) => boolean = (s) => s.state === ContainerState.CONTAINER_RUNNING,
) {
  const rt = env.berth.cri.runtime;
  const config = podConfig(env.work, { hostNetwork: false, name: 'stream-pod' });
  const { containerId } = await rt.createContainer({
    podSandboxId: podId,
    config: containerConfig(name, {
      command,
      ...extra,
      linux: { securityContext: { namespaceOptions: { network: NamespaceMode.POD } } },
    }),
    sandboxConfig: config,
  });
  await rt.startContainer({ containerId });
  await waitForState(env.berth, containerId, until);
  return containerId;
}

before(async () => {
  env = await startEnv('stream');
  const rt = env.berth.cri.runtime;
  const config = podConfig(env.work, { hostNetwork: false, name: 'stream-pod' });
  podId = (await rt.runPodSandbox({ config, runtimeHandler: '' })).podSandboxId;
  sleeper = await container('sleeper', ['sh', '-c', 'nc -ll -p 8080 -e cat']);
  reader = await container('reader', ['sh', '-c', 'read line; echo "got $line"'], {
    stdin: true,
    stdinOnce: true,
  });
  const ids: Record<string, string> = { sleeper, reader };
  // The test's CNI network has no loopback plugin: berth brings lo up itself,
  // and port-forward dials 127.0.0.1 in the pod.
  shim = await startKubeShim({
    podName: 'pod1',
    containers: [{ name: 'sleeper' }, { name: 'reader', stdin: true }],
    streamUrl: async (kind, p) => {
      if (kind === 'exec') {
        const res = await rt.exec({
          containerId: ids[p.container],
          cmd: p.command,
          tty: p.tty,
          stdin: p.stdin,
          stdout: p.stdout,
          stderr: p.stderr,
        });
        return res.url;
      }
      if (kind === 'attach') {
        const res = await rt.attach({
          containerId: ids[p.container],
          tty: p.tty,
          stdin: p.stdin,
          stdout: p.stdout,
          stderr: p.stderr,
        });
        return res.url;
      }
      return (await rt.portForward({ podSandboxId: podId, port: p.ports })).url;
    },
  });
});

after(async () => {
  await shim?.close();
  await env?.cleanup();
});

function kubectl(args: string[], input = '', extraEnv: Record<string, string> = {}) {
  return run('/usr/bin/kubectl', args, { env: shim.env(extraEnv), input, timeoutMs: 60_000 });
}

describe('streaming through the daemon', () => {
  it('Exec hands out a URL kubectl runs a command through, with its exit code', async () => {
    const r = await kubectl(['exec', '-i', 'pod1', '-c', 'sleeper', '--', 'sh', '-c', 'cat; exit 5'], SECRET);
    assert.equal(r.code, 5, r.stderr);
    assert.equal(r.stdout, SECRET);
    const spdy = await kubectl(['exec', 'pod1', '-c', 'sleeper', '--', 'echo', 'ok'], '', {
      KUBECTL_REMOTE_COMMAND_WEBSOCKETS: 'false',
    });
    assert.equal(spdy.stdout, 'ok\n', spdy.stderr);
  });

  it('Attach connects to the container stdio through conmon', async () => {
    const r = await kubectl(['attach', '-i', 'pod1', '-c', 'reader'], `${SECRET}\n`);
    assert.equal(
      r.code,
      0,
      r.stderr +
        env.berth
          .logs()
          .split('\n')
          .filter((l) => /stream|attach/.test(l))
          .join('\n'),
    );
    assert.match(r.stdout, new RegExp(`got ${SECRET}`));
  });

  it('PortForward reaches a port inside the pod network namespace', async () => {
    const child = spawn('/usr/bin/kubectl', ['port-forward', 'pod1', ':8080'], {
      env: shim.env(),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    try {
      const port = await new Promise<number>((resolve, reject) => {
        child.stdout.on('data', (chunk: Buffer) => {
          const m = /127\.0\.0\.1:(\d+)/.exec(chunk.toString());
          if (m) resolve(Number(m[1]));
        });
        child.once('exit', (code) => reject(new Error(`kubectl port-forward exited with ${code}`)));
      });
      const socket = connect(port, '127.0.0.1');
      let echoed = '';
      socket.on('data', (chunk: Buffer) => {
        echoed += chunk.toString();
        if (echoed.length >= SECRET.length + 1) socket.end();
      });
      socket.write(`${SECRET}\n`);
      await new Promise((resolve) => socket.once('close', resolve));
      assert.equal(echoed, `${SECRET}\n`, stderr);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('refuses bad requests with the right codes', async () => {
    const rt = env.berth.cri.runtime;
    const base = {
      containerId: sleeper,
      cmd: ['true'],
      tty: false,
      stdin: false,
      stdout: true,
      stderr: false,
    };
    await assert.rejects(rt.exec({ ...base, cmd: [] }), grpcCode(status.INVALID_ARGUMENT, /cmd is empty/));
    await assert.rejects(
      rt.exec({ ...base, tty: true, stderr: true }),
      grpcCode(status.INVALID_ARGUMENT, /tty/),
    );
    await assert.rejects(
      rt.exec({ ...base, stdout: false }),
      grpcCode(status.INVALID_ARGUMENT, /stdin, stdout/),
    );
    await assert.rejects(rt.exec({ ...base, containerId: 'nonexistent0' }), grpcCode(status.NOT_FOUND));
    await assert.rejects(
      rt.attach({ containerId: 'nonexistent0', tty: false, stdin: false, stdout: true, stderr: false }),
      grpcCode(status.NOT_FOUND),
    );
    await assert.rejects(
      rt.portForward({ podSandboxId: 'nonexistent0', port: [80] }),
      grpcCode(status.NOT_FOUND),
    );
    await assert.rejects(
      rt.portForward({ podSandboxId: podId, port: [70000] }),
      grpcCode(status.INVALID_ARGUMENT),
    );
    const done = await container('done', ['true'], {}, (s) => s.state === ContainerState.CONTAINER_EXITED);
    await assert.rejects(
      rt.exec({ ...base, containerId: done }),
      grpcCode(status.FAILED_PRECONDITION, /not running/),
    );
  });

  it('answers a used token with 404', async () => {
    const { url } = await env.berth.cri.runtime.exec({
      containerId: sleeper,
      cmd: ['true'],
      tty: false,
      stdin: false,
      stdout: true,
      stderr: false,
    });
    const upgrade = () =>
      new Promise<number>((resolve, reject) => {
        const req = request(url, {
          method: 'POST',
          headers: { Connection: 'Upgrade', Upgrade: 'SPDY/3.1', 'X-Stream-Protocol-Version': 'v9.unknown' },
        });
        req.on('response', (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        req.on('upgrade', (res, socket) => {
          socket.destroy();
          resolve(res.statusCode ?? 0);
        });
        req.on('error', reject);
        req.end();
      });
    assert.equal(await upgrade(), 403);
    assert.equal(await upgrade(), 404);
  });

  it('keeps stream data and tokens out of the log', () => {
    const logs = env.berth.logs();
    assert.match(logs, /exec session ended/);
    assert.ok(!logs.includes(SECRET), 'stream data reached the log');
    const url = /.{0,300}\/(exec|attach|portforward)\/[A-Za-z0-9_-]{16,}.{0,100}/.exec(logs);
    assert.equal(url?.[0], undefined, 'a stream URL reached the log');
  });
});
