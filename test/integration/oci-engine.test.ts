/**
 * The OCI engine against real conmon and real runc, on a busybox rootfs.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm, stat, rename } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { ConmonEngine } from '../../src/oci/engine.js';
import { execFifoPath, startThroughExecFifo, usesRuncExecFifo } from '../../src/oci/exec-fifo.js';
import { silentLogger } from '../../src/log.js';
import { run } from '../../src/util/run.js';
import { makeBusyboxRootfs, minimalSpec, runcHandler, testId } from '../helpers/oci-bundle.js';
import type { RuntimeHandler } from '../../src/oci/types.js';

let dir: string;
/** Unique cgroup parent of this run's containers, removed in after(). */
const cgParent = `/berth-oci-test-${process.pid}`;
let rootfs: string;
let engine: ConmonEngine;
let handler: RuntimeHandler;
const created: { id: string; handler: RuntimeHandler }[] = [];

function newEngine(): ConmonEngine {
  return new ConmonEngine({
    conmonPath: '/usr/bin/conmon',
    runRoot: join(dir, 'run'),
    exitDir: join(dir, 'run', 'exits'),
    cgroupDriver: 'cgroupfs',
    log: silentLogger,
  });
}

async function createContainer(
  args: string[],
  options: Parameters<typeof minimalSpec>[2] & {
    stdin?: boolean;
    stdinOnce?: boolean;
    handler?: RuntimeHandler;
  } = {},
) {
  const id = testId('eng');
  const h = options.handler ?? handler;
  const bundleDir = join(dir, 'bundles', id);
  const logPath = join(dir, 'logs', `${id}.log`);
  created.push({ id, handler: h });
  const { pid } = await engine.create({
    id,
    handler: h,
    bundleDir,
    spec: minimalSpec(rootfs, args, { cgroupsPath: `${cgParent}/${id}`, ...options }),
    logPath,
    stdin: options.stdin ?? false,
    stdinOnce: options.stdinOnce ?? false,
    tty: options.terminal ?? false,
  });
  return { id, pid, logPath, bundleDir };
}

async function collect(stream: NodeJS.ReadableStream | null): Promise<string> {
  if (!stream) return '';
  let text = '';
  for await (const chunk of stream) text += chunk.toString();
  return text;
}

async function zombieOrAlive(pid: number): Promise<string | undefined> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  } catch {
    return undefined;
  }
}

/** rmdir a cgroup tree (leaves first) in every hierarchy. */
async function removeCgroups(path: string): Promise<void> {
  const { readdir, rmdir } = await import('node:fs/promises');
  const remove = async (full: string): Promise<void> => {
    const entries = await readdir(full, { withFileTypes: true }).catch(() => []);
    for (const e of entries) if (e.isDirectory()) await remove(join(full, e.name));
    await rmdir(full).catch(() => undefined);
  };
  for (const hierarchy of await readdir('/sys/fs/cgroup').catch(() => [] as string[])) {
    await remove(join('/sys/fs/cgroup', hierarchy, path));
  }
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'berth-oci-'));
  rootfs = join(dir, 'rootfs');
  await makeBusyboxRootfs(rootfs);
  handler = runcHandler(dir);
  engine = newEngine();
});

after(async () => {
  for (const { id, handler: h } of created) {
    await run(h.path, [`--root=${h.root}`, 'delete', '--force', id]).catch(() => undefined);
    const conmonPid = await engine.conmonPid(id).catch(() => 0);
    if (conmonPid > 0 && (await zombieOrAlive(conmonPid)) !== undefined) {
      try {
        process.kill(conmonPid, 'SIGKILL');
      } catch {
        // gone
      }
    }
  }
  engine.close();
  await rm(dir, { recursive: true, force: true });
  await removeCgroups(cgParent);
});

describe('OCI engine with conmon and runc', () => {
  it('creates, starts, records the exit code and writes a CRI log', async () => {
    const c = await createContainer(['sh', '-c', 'echo hello; echo oops >&2; exit 3']);
    assert.ok(c.pid > 0);
    const created = await engine.state(c.id, handler);
    assert.equal(created?.status, 'created');
    assert.equal(created?.pid, c.pid);
    assert.equal(await engine.exitInfo(c.id), undefined);
    const waiting = engine.waitExit(c.id);
    await engine.start(c.id, handler);
    const exit = await waiting;
    assert.equal(exit.exitCode, 3);
    assert.equal(exit.oomKilled, false);
    assert.ok(exit.finishedAtNs > BigInt(Date.now() - 60_000) * 1_000_000n);
    assert.equal((await engine.state(c.id, handler))?.status, 'stopped');
    const log = await readFile(c.logPath, 'utf8');
    const lines = log.trim().split('\n');
    assert.equal(lines.length, 2, log);
    assert.match(
      lines.find((l) => l.includes(' stdout '))!,
      /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+(Z|[+-]\d\d:\d\d) stdout F hello$/,
    );
    assert.match(
      lines.find((l) => l.includes(' stderr '))!,
      /^\S+ stderr F oops$/,
    );
    await engine.delete(c.id, handler, false);
    assert.equal(await engine.state(c.id, handler), undefined);
    await engine.delete(c.id, handler, false); // idempotent
    await engine.cleanup(c.id);
    assert.equal(await engine.exitInfo(c.id), undefined);
  });

  it('starts a runc container through its exec fifo; a second start is refused by runc itself', async () => {
    const c = await createContainer(['sleep', '1000']);
    const fifo = execFifoPath(handler, c.id);
    assert.ok((await stat(fifo)).isFIFO(), 'runc create leaves the exec fifo');
    assert.equal(await startThroughExecFifo(handler, c.id, c.pid), true, 'released without runc start');
    await assert.rejects(stat(fifo), /ENOENT/);
    const state = await engine.state(c.id, handler);
    assert.equal(state?.status, 'running');
    assert.equal(state?.pid, c.pid);
    assert.equal(await zombieOrAlive(c.pid), 'S');
    await assert.rejects(
      engine.start(c.id, handler),
      new RegExp(`start of container ${c.id}.*already running`),
    );
    await engine.kill(c.id, handler, 'SIGKILL', true);
    await engine.waitExit(c.id, AbortSignal.timeout(10_000));
    await engine.delete(c.id, handler, true);
  });

  it('a created container whose init died is not started: runc says why', async () => {
    const c = await createContainer(['sleep', '1000']);
    process.kill(c.pid, 'SIGKILL');
    await engine.waitExit(c.id, AbortSignal.timeout(10_000));
    assert.equal(await startThroughExecFifo(handler, c.id, c.pid), false);
    await assert.rejects(engine.start(c.id, handler), new RegExp(`start of container ${c.id}.*stopped`));
    await engine.delete(c.id, handler, true);
  });

  it('only a runc binary with its own --root gets the exec fifo start', () => {
    assert.equal(usesRuncExecFifo(handler), true);
    assert.equal(usesRuncExecFifo({ ...handler, path: '/usr/bin/runsc' }), false);
    assert.equal(usesRuncExecFifo({ ...handler, path: '/usr/bin/crun' }), false);
    assert.equal(usesRuncExecFifo({ ...handler, runtimeArgs: ['--root=/elsewhere'] }), false);
    assert.equal(usesRuncExecFifo({ ...handler, type: 'vm' }), false);
  });

  it('kills a running container and records 128+signal', async () => {
    const c = await createContainer(['sleep', '1000']);
    await engine.start(c.id, handler);
    assert.equal((await engine.state(c.id, handler))?.status, 'running');
    await engine.kill(c.id, handler, 'SIGTERM');
    // sleep as pid 1 ignores SIGTERM (no handler): it takes SIGKILL.
    await engine.kill(c.id, handler, 'SIGKILL', true);
    const exit = await engine.waitExit(c.id, AbortSignal.timeout(10_000));
    assert.equal(exit.exitCode, 137);
    await engine.kill(c.id, handler, 'SIGKILL'); // stopping a stopped container is fine
    await engine.delete(c.id, handler, true);
  });

  it('reports the runtime error of a failed create, naming handler and container, and leaves nothing', async () => {
    const id = testId('bad');
    const bundleDir = join(dir, 'bundles', id);
    created.push({ id, handler });
    await assert.rejects(
      engine.create({
        id,
        handler,
        bundleDir,
        spec: minimalSpec(rootfs, ['/no/such/binary'], { cgroupsPath: `${cgParent}/${id}` }),
        logPath: join(dir, 'logs', `${id}.log`),
        stdin: false,
        stdinOnce: false,
        tty: false,
      }),
      (err: Error) => {
        assert.match(err.message, new RegExp(`runtime handler "runc".*container ${id}.*no such file`, 'si'));
        return true;
      },
    );
    assert.equal(await engine.state(id, handler), undefined);
    await assert.rejects(stat(join(dir, 'run', 'conmon', id)), /ENOENT/);
  });

  it('unknown containers: state undefined, delete idempotent, kill NotFound', async () => {
    assert.equal(await engine.state('nope-123', handler), undefined);
    await engine.delete('nope-123', handler, true);
    await assert.rejects(engine.kill('nope-123', handler, 'SIGKILL'), /nope-123.*runc/);
  });

  it('feeds stdin from the attach socket and closes it for stdinOnce', async () => {
    const c = await createContainer(['cat'], { stdin: true, stdinOnce: true });
    await engine.start(c.id, handler);
    const socket = engine.attachSocketPath(c.id);
    // The attach socket is SOCK_SEQPACKET, which Node cannot open: socat (type=5) can.
    const result = await run('/usr/bin/socat', ['-u', 'STDIN', `UNIX-CONNECT:${socket},type=5`], {
      input: 'from stdin\n',
      timeoutMs: 10_000,
    });
    assert.equal(result.code, 0, result.stderr);
    const exit = await engine.waitExit(c.id, AbortSignal.timeout(10_000));
    assert.equal(exit.exitCode, 0);
    assert.match(await readFile(c.logPath, 'utf8'), /^\S+ stdout F from stdin$/m);
    await engine.delete(c.id, handler, true);
  });

  it('records an OOM kill', async () => {
    const c = await createContainer(['dd', 'if=/dev/zero', 'of=/dev/null', 'bs=128M', 'count=1'], {
      memoryLimit: 16 * 1024 * 1024,
    });
    await engine.start(c.id, handler);
    const exit = await engine.waitExit(c.id, AbortSignal.timeout(20_000));
    assert.equal(exit.exitCode, 137);
    assert.equal(exit.oomKilled, true);
    await engine.delete(c.id, handler, true);
  });

  it('execs without a tty: stdout, stderr, exit code, env and cwd', async () => {
    const c = await createContainer(['sleep', '1000']);
    await engine.start(c.id, handler);
    const p = await engine.exec({
      id: c.id,
      handler,
      args: ['sh', '-c', 'echo out $FOO; pwd; echo err >&2; read line; echo got $line; exit 5'],
      tty: false,
      env: ['PATH=/bin', 'FOO=bar'],
      cwd: '/tmp',
    });
    p.stdin!.end('typed\n');
    const [out, err, exit] = await Promise.all([collect(p.stdout), collect(p.stderr), p.exited]);
    assert.equal(out, 'out bar\n/tmp\ngot typed\n');
    assert.equal(err, 'err\n');
    assert.deepEqual(exit, { exitCode: 5, signal: null });
    await engine.kill(c.id, handler, 'SIGKILL', true);
    await engine.waitExit(c.id, AbortSignal.timeout(10_000));
    await assert.rejects(
      engine.exec({ id: c.id, handler, args: ['true'], tty: false }),
      new RegExp(`${c.id}.*runc.*stopped`),
    );
    // The exec dir of a finished exec goes; a refused exec leaves none.
    const persist = join(dir, 'run', 'conmon', c.id);
    const execDirs = async () => (await readdir(persist)).filter((name) => name.startsWith('exec-'));
    for (let i = 0; i < 40 && (await execDirs()).length > 0; i++) await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(await execDirs(), []);
    await engine.delete(c.id, handler, true);
    await engine.cleanup(c.id);
    await assert.rejects(
      engine.exec({ id: c.id, handler, args: ['true'], tty: false }),
      new RegExp(`${c.id}.*does not know it`),
    );
    await assert.rejects(stat(persist), /ENOENT/, 'a removed container does not get its dir back');
    // Refused before the running check settles (which fails too): one clear error, nothing unhandled.
    await assert.rejects(engine.exec({ id: c.id, handler, args: [], tty: false }), /the command is empty/);
    await new Promise((r) => setTimeout(r, 200));
  });

  it('execs with a tty (pty from socat), resizes it', async () => {
    const c = await createContainer(['sleep', '1000']);
    await engine.start(c.id, handler);
    const p = await engine.exec({
      id: c.id,
      handler,
      args: ['sh', '-c', '[ -t 0 ] && [ -t 1 ] && echo is-a-tty; read x; stty size; echo TERM=$TERM'],
      tty: true,
    });
    assert.equal(p.stderr, null);
    let out = '';
    p.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    const deadline = Date.now() + 10_000;
    while (!out.includes('is-a-tty') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    p.resize(91, 37);
    await new Promise((r) => setTimeout(r, 300));
    p.stdin!.write('go\r');
    const exit = await p.exited;
    assert.equal(exit.exitCode, 0, out);
    assert.match(out, /is-a-tty/);
    assert.match(out, /37 91/);
    assert.match(out, /TERM=xterm/);
    await engine.delete(c.id, handler, true);
  });

  it('kills an exec at its timeout and leaves no zombie', async () => {
    const c = await createContainer(['sleep', '1000']);
    await engine.start(c.id, handler);
    const started = Date.now();
    const p = await engine.exec({ id: c.id, handler, args: ['sleep', '100'], tty: false, timeoutMs: 500 });
    const exit = await p.exited;
    assert.equal(exit.timedOut, true);
    assert.equal(exit.exitCode, 137);
    assert.ok(Date.now() - started < 5000);
    // Nothing of the exec stays: no sleep 100 in the container, no zombie child of ours.
    const ps = await run(handler.path, [`--root=${handler.root}`, 'ps', '--format', 'json', c.id]);
    assert.equal((JSON.parse(ps.stdout) as number[]).length, 1, ps.stdout);
    const { readdir } = await import('node:fs/promises');
    for (const entry of await readdir('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) === process.pid)
        assert.notEqual(fields[0], 'Z', `zombie child ${entry}: ${stat}`);
    }
    await engine.delete(c.id, handler, true);
  });

  it('reopens the log through conmon', async () => {
    const c = await createContainer(['sh', '-c', 'echo first; read x; echo second; sleep 1000'], {
      stdin: true,
    });
    await engine.start(c.id, handler);
    const deadline = Date.now() + 10_000;
    while (!(await readFile(c.logPath, 'utf8')).includes('first') && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    await rename(c.logPath, `${c.logPath}.1`);
    await engine.reopenLog(c.id);
    assert.equal(await readFile(c.logPath, 'utf8'), '');
    await run('/usr/bin/socat', ['-u', 'STDIN', `UNIX-CONNECT:${engine.attachSocketPath(c.id)},type=5`], {
      input: 'x\n',
      timeoutMs: 10_000,
    });
    while (!(await readFile(c.logPath, 'utf8')).includes('second') && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.match(await readFile(c.logPath, 'utf8'), /stdout F second/);
    assert.match(await readFile(`${c.logPath}.1`, 'utf8'), /stdout F first/);
    await engine.kill(c.id, handler, 'SIGKILL', true);
    await engine.waitExit(c.id, AbortSignal.timeout(10_000));
    await assert.rejects(engine.reopenLog(c.id), /not running/);
    await engine.delete(c.id, handler, true);
  });

  it('keeps the container under conmon when its berth process is SIGKILLed', async () => {
    const id = testId('surv');
    created.push({ id, handler });
    const child = spawn(
      process.execPath,
      [join(import.meta.dirname, '..', 'helpers', 'engine-child.js'), dir, rootfs, id, cgParent],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    const exited = new Promise((r) => child.once('exit', r));
    try {
      await new Promise<void>((resolve, reject) => {
        child.stdout.on('data', (d: Buffer) => d.toString().includes('started') && resolve());
        child.once('exit', () => reject(new Error('engine child exited early')));
      });
    } finally {
      child.kill('SIGKILL');
      await exited;
    }
    // A fresh engine (as after a restart) finds it running, its conmon alive.
    const second = newEngine();
    try {
      assert.equal((await second.state(id, handler))?.status, 'running');
      assert.equal(await second.conmonAlive(id), true);
      await second.kill(id, handler, 'SIGKILL', true);
      const exit = await second.waitExit(id, AbortSignal.timeout(10_000));
      assert.equal(exit.exitCode, 137);
    } finally {
      second.close();
    }
    await engine.delete(id, handler, true);
  });

  it('runs a container on runsc (gVisor)', async () => {
    const runsc: RuntimeHandler = {
      name: 'runsc',
      path: '/usr/bin/runsc',
      root: join(dir, 'runsc-root'),
      type: 'oci',
      // gVisor refuses its sandbox network in this machine's namespaces: no network here.
      runtimeArgs: ['--network=none'],
    };
    const c = await createContainer(['sh', '-c', 'echo hello from gvisor; uname -r'], { handler: runsc });
    await engine.start(c.id, runsc);
    const exit = await engine.waitExit(c.id, AbortSignal.timeout(30_000));
    assert.equal(exit.exitCode, 0);
    const log = await readFile(c.logPath, 'utf8');
    assert.match(log, /stdout F hello from gvisor/);
    // gVisor's own kernel version, not the host's.
    assert.match(log, /stdout F 4\.4\.0/);
    await engine.delete(c.id, runsc, true);
  });

  it('crun fails with a clear error naming the handler', async () => {
    const crun: RuntimeHandler = {
      name: 'crun',
      path: '/usr/bin/crun',
      root: join(dir, 'crun-root'),
      type: 'oci',
    };
    const id = testId('crun');
    created.push({ id, handler: crun });
    await assert.rejects(
      engine.create({
        id,
        handler: crun,
        bundleDir: join(dir, 'bundles', id),
        spec: minimalSpec(rootfs, ['true'], { cgroupsPath: `${cgParent}/${id}` }),
        logPath: join(dir, 'logs', `${id}.log`),
        stdin: false,
        stdinOnce: false,
        tty: false,
      }),
      (err: Error) => {
        assert.match(
          err.message,
          new RegExp(`runtime handler "crun" \\(/usr/bin/crun\\) failed to create container ${id}: \\S`),
        );
        return true;
      },
    );
    assert.equal(await engine.state(id, crun), undefined);
  });
});
