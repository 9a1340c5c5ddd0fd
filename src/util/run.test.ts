import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { access, mkdtemp, realpath, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { nativeHelper } from './native.js';
import { run, startProcess, useSpawnHelper } from './run.js';
import { Spawner, type ProcessEnd } from './spawner.js';

const SPAWN_HELPER = nativeHelper('berth-spawn');

let dir: string;
before(async () => {
  dir = await realpath(await mkdtemp(join(tmpdir(), 'berth-run-')));
});
after(async () => {
  useSpawnHelper(true);
  await rm(dir, { recursive: true, force: true });
});

it('the spawn helper was built (gcc is part of the set-up)', async () => {
  await access(SPAWN_HELPER);
});

for (const backend of ['berth-spawn', 'node'] as const) {
  describe(`run() and startProcess() through ${backend}`, () => {
    before(() => useSpawnHelper(backend === 'berth-spawn'));

    it('captures stdout, stderr and the exit code, with args, env, cwd and stdin', async () => {
      const result = await run(
        '/bin/sh',
        ['-c', 'read line; echo "$line $1 $GREETING $(pwd)"; echo oops >&2; exit 7', 'sh', 'arg1'],
        { input: 'from-stdin\n', env: { GREETING: 'hello', PATH: '/usr/bin:/bin' }, cwd: dir },
      );
      assert.deepEqual(result, {
        code: 7,
        signal: null,
        stdout: `from-stdin arg1 hello ${dir}\n`,
        stderr: 'oops\n',
        timedOut: false,
      });
    });

    it('feeds stdin larger than a pipe buffer and reads output as large', async () => {
      const input = Buffer.alloc(3 * 1024 * 1024, 'x');
      const result = await run('cat', [], { input });
      assert.equal(result.code, 0);
      assert.equal(result.stdout.length, input.length);
    });

    it('caps captured output per stream', async () => {
      const result = await run('/bin/sh', ['-c', 'head -c 100000 /dev/zero; head -c 5000 /dev/zero >&2'], {
        maxOutputBytes: 4096,
      });
      assert.equal(result.code, 0);
      assert.equal(result.stdout.length, 4096);
      assert.equal(result.stderr.length, 4096);
    });

    it('searches PATH of the given environment for a bare name', async () => {
      const result = await run('true', [], { env: { PATH: '/nonexistent:/bin' } });
      assert.equal(result.code, 0);
    });

    it('rejects like Node does when the program cannot start', async () => {
      await assert.rejects(run(join(dir, 'no-such-program'), []), (err: NodeJS.ErrnoException) => {
        assert.equal(err.code, 'ENOENT');
        assert.match(err.message, /no-such-program/);
        return true;
      });
      await assert.rejects(run('true', [], { cwd: join(dir, 'no-such-dir') }), { code: 'ENOENT' });
      await assert.rejects(run('no-such-program-anywhere', [], { env: { PATH: '/bin:/usr/bin' } }), {
        code: 'ENOENT',
      });
    });

    it('kills a program that runs past its timeout and says so', async () => {
      const started = Date.now();
      const result = await run('sleep', ['30'], { timeoutMs: 200 });
      assert.equal(result.signal, 'SIGKILL');
      assert.equal(result.code, null);
      assert.equal(result.timedOut, true);
      assert.ok(Date.now() - started < 5000);
    });

    it('reports a program killed by a signal', async () => {
      const result = await run('/bin/sh', ['-c', 'kill -TERM $$']);
      assert.equal(result.signal, 'SIGTERM');
      assert.equal(result.timedOut, false);
    });

    it('runs many programs at once and matches each reply to its call', async () => {
      const results = await Promise.all(
        Array.from({ length: 40 }, (_, i) =>
          run('/bin/sh', ['-c', `sleep 0.0${i % 5}; echo ${i}; exit ${i % 3}`]),
        ),
      );
      results.forEach((result, i) => {
        assert.equal(result.stdout, `${i}\n`);
        assert.equal(result.code, i % 3);
      });
    });

    it('startProcess: gives the child streams to berth as its fds, in a session of its own, and reports its pid first', async () => {
      const child = startProcess({
        file: '/bin/sh',
        // fd 3 in, fd 4 out, stdout a stream too; its session id on fd 4 first.
        args: ['-c', 'ps -o sid= -p $$ >&4; read line <&3; echo "got $line" >&4; echo out; echo err >&2'],
        env: process.env,
        streams: [1, 3, 4],
        newSession: true,
      });
      const pid = await child.started;
      assert.ok(pid > 0);
      const fd4 = child.streams.get(4)!;
      const fd1 = child.streams.get(1)!;
      const collect = (socket: NodeJS.ReadableStream) =>
        new Promise<string>((resolve) => {
          let text = '';
          socket.on('data', (chunk: Buffer) => (text += chunk.toString()));
          socket.on('end', () => resolve(text));
        });
      const fromFd4 = collect(fd4);
      const fromFd1 = collect(fd1);
      child.streams.get(3)!.end('hello\n');
      const outcome = await child.done;
      assert.equal(outcome.code, 0);
      assert.equal(outcome.stderr.toString(), 'err\n', 'stderr not given as a stream is captured');
      assert.equal(outcome.stdout.length, 0);
      assert.equal(await fromFd1, 'out\n');
      const [sid, got] = (await fromFd4).split('\n').map((line) => line.trim());
      assert.equal(sid, String(pid), 'its own session: the session id is its pid');
      assert.equal(got, 'got hello');
      assert.equal(child.ended, true);
    });

    it('startProcess: signals a running program, and only while it runs', async () => {
      const child = startProcess({ file: 'sleep', args: ['30'], env: process.env, discardStdio: true });
      await child.started;
      child.kill('SIGTERM');
      const outcome = await child.done;
      assert.equal(outcome.signal, 'SIGTERM');
      child.kill('SIGKILL'); // ended: nothing is sent
    });

    it('startProcess: rejects started and done when the program cannot start', async () => {
      const child = startProcess({ file: join(dir, 'missing'), args: [], env: process.env, streams: [3] });
      await assert.rejects(child.started, { code: 'ENOENT' });
      await assert.rejects(child.done, { code: 'ENOENT' });
    });
  });
}

describe('berth-spawn', () => {
  it('does not hold the event loop while programs start (Node spawn does)', async () => {
    useSpawnHelper(true);
    // Enough resident memory that a fork of this process costs what a daemon's does.
    const ballast = Array.from({ length: 96 }, () => Buffer.alloc(1024 * 1024, 1));
    // The worst delay while each program starts, and the median of those over 20 starts: a
    // single stall of the whole host (tens of ms on this VM, any process sees it) then
    // decides nothing, while Node's fork holds the loop on every start.
    const typicalDelay = async (): Promise<number> => {
      const worst: number[] = [];
      for (let i = 0; i < 20; i++) {
        const histogram = monitorEventLoopDelay({ resolution: 1 });
        histogram.enable();
        // Its timer ticks before the start, so a loop held by the start shows as a late tick.
        await new Promise((resolve) => setTimeout(resolve, 5));
        await run('true', []);
        await new Promise((resolve) => setTimeout(resolve, 2));
        histogram.disable();
        worst.push(histogram.max / 1e6);
      }
      return worst.sort((a, b) => a - b)[10];
    };
    await run('true', []); // the helper itself starts through Node once
    const helperTypical = await typicalDelay();
    useSpawnHelper(false);
    const nodeTypical = await typicalDelay();
    useSpawnHelper(true);
    assert.ok(ballast.length > 0);
    assert.ok(
      helperTypical < nodeTypical,
      `median worst event-loop delay per start ${helperTypical.toFixed(1)} ms through berth-spawn, ${nodeTypical.toFixed(1)} ms through Node`,
    );
  });

  it('rejects the calls in flight when the helper dies, and starts a new one for the next', async () => {
    const spawner = new Spawner(SPAWN_HELPER);
    const running = spawner.start({ file: 'sleep', args: ['30'], env: process.env }).done;
    await new Promise((resolve) => setTimeout(resolve, 100));
    const helpers = await run('pgrep', ['-P', String(process.pid), '-x', 'berth-spawn']);
    const pids = helpers.stdout.trim().split('\n').filter(Boolean);
    assert.ok(pids.length >= 1, 'a berth-spawn child is running');
    for (const pid of pids) process.kill(Number(pid), 'SIGKILL');
    await assert.rejects(running, /sleep: outcome unknown, berth-spawn was killed by SIGKILL/);
    const next = await spawner.start({ file: 'echo', args: ['again'], env: process.env }).done;
    assert.equal(next.stdout.toString(), 'again\n');
    spawner.close();
  });

  it('is the subreaper of what its programs leave behind, and reports how each ended', async () => {
    const spawner = new Spawner(SPAWN_HELPER);
    const ended = new Map<number, ProcessEnd>();
    let wake = () => {};
    spawner.onAdoptedExit((pid, end) => {
      ended.set(pid, end);
      wake();
    });
    // Each shell exits at once, leaving a background child (a daemon, as conmon becomes).
    const left = async (script: string) =>
      Number(
        (await spawner.start({ file: 'sh', args: ['-c', script], env: process.env }).done).stdout.toString(),
      );
    const exits7 = await left('(sleep 0.2; exit 7) >/dev/null 2>&1 & echo $!');
    const killed = await left('sleep 30 >/dev/null 2>&1 & echo $!');
    process.kill(killed, 'SIGTERM');
    const deadline = Date.now() + 5_000;
    while (!(ended.has(exits7) && ended.has(killed)) && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, 100);
      });
    }
    assert.deepEqual(ended.get(exits7), { code: 7, signal: null });
    assert.deepEqual(ended.get(killed), { code: null, signal: 'SIGTERM' });
    spawner.close();
  });

  it('refuses an argument with a NUL byte instead of cutting it short', async () => {
    const spawner = new Spawner(SPAWN_HELPER);
    await assert.rejects(spawner.start({ file: 'echo', args: ['a\0b'], env: process.env }).done, /NUL byte/);
    // A refused request leaves no stream waiting to be claimed.
    const withStream = spawner.start({ file: 'echo', args: ['a\0b'], env: process.env, streams: [3] });
    await assert.rejects(withStream.started, /NUL byte/);
    assert.equal((spawner as unknown as { waiting: Map<string, unknown> }).waiting.size, 0);
    spawner.close();
  });

  it('lets a process that used it exit without waiting for the helper', async () => {
    const script = `
      import { run } from ${JSON.stringify(new URL('./run.js', import.meta.url).href)};
      const r = await run('echo', ['done']);
      process.stdout.write(r.stdout);
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    const code = await new Promise<number | null>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error('the process did not exit within 5 s'));
      }, 5000);
      child.on('exit', (c) => {
        clearTimeout(timer);
        resolve(c);
      });
    });
    assert.equal(code, 0);
    assert.equal(out, 'done\n');
  });
});
