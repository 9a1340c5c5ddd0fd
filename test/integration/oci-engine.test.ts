/**
 * The OCI engine against real conmon and real runc, on a busybox rootfs.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, writeFile, rename } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { ConmonEngine } from '../../src/oci/engine.js';
import { silentLogger } from '../../src/log.js';
import { run } from '../../src/util/run.js';
import { makeBusyboxRootfs, minimalSpec, runcHandler, testId } from '../helpers/oci-bundle.js';
import type { ExecProcess, RuntimeHandler } from '../../src/oci/types.js';

let dir: string;
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
    spec: minimalSpec(rootfs, args, { cgroupsPath: `/berth-test/${id}`, ...options }),
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
        spec: minimalSpec(rootfs, ['/no/such/binary'], { cgroupsPath: `/berth-test/${id}` }),
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
});
