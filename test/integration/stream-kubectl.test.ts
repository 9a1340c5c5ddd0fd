/**
 * kubectl (a real, independent client) against berth's streaming server
 * through the API shim: exec with and without a tty over WebSocket and SPDY,
 * exit codes, stdin, attach, and port-forward.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { StreamFixture, kubectl } from './stream-fixture.js';
import type { KubeShim } from '../helpers/kube-shim.js';
import { run } from '../../src/util/run.js';
import { spawn } from 'node:child_process';
import { connect } from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { setTimeout } from 'node:timers/promises';

const SPDY = { KUBECTL_REMOTE_COMMAND_WEBSOCKETS: 'false', KUBECTL_PORT_FORWARD_WEBSOCKETS: 'false' };
const WS = { KUBECTL_REMOTE_COMMAND_WEBSOCKETS: 'true', KUBECTL_PORT_FORWARD_WEBSOCKETS: 'true' };

const fixture = new StreamFixture();
let shim: KubeShim;
let main: string;

before(async () => {
  await fixture.setup();
  main = await fixture.container(['sleep', '1000']);
  shim = await fixture.shim([{ name: 'main', id: main }], 'pod-sandbox-1');
});

after(async () => {
  await shim?.close();
  await fixture.cleanup();
});

for (const [transport, env] of [
  ['SPDY', SPDY],
  ['WebSocket', WS],
] as const) {
  describe(`kubectl exec over ${transport}`, () => {
    it('returns stdout, stderr and exit code 0', async () => {
      const r = await kubectl(shim, ['exec', 'pod1', '--', 'sh', '-c', 'echo out; echo err >&2'], { env });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, 'out\n');
      assert.match(r.stderr, /err\n/);
    });

    it('propagates a non-zero exit code', async () => {
      const r = await kubectl(shim, ['exec', 'pod1', '--', 'sh', '-c', 'exit 7'], { env });
      assert.equal(r.code, 7, r.stderr);
    });

    it('passes stdin through and closes it cleanly', async () => {
      const r = await kubectl(
        shim,
        ['exec', '-i', 'pod1', '--', 'sh', '-c', 'wc -c; cat >/dev/null; echo done'],
        {
          env,
          input: 'x'.repeat(100_000),
        },
      );
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^\s*100000\ndone\n$/);
    });
  });
}

/** Runs kubectl on a pseudo-terminal (script(1)) of the given size, feeding input. */
function onTerminal(
  kubectlArgs: string[],
  env: Record<string, string>,
  input: string,
  cols = 123,
  rows = 45,
) {
  const quoted = kubectlArgs.map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  return run(
    '/usr/bin/script',
    ['-qec', `stty cols ${cols} rows ${rows}; exec /usr/bin/kubectl ${quoted}`, '/dev/null'],
    {
      env: shim.env(env),
      input,
      timeoutMs: 60_000,
    },
  );
}

for (const [transport, env] of [
  ['SPDY', SPDY],
  ['WebSocket', WS],
] as const) {
  describe(`kubectl exec -it over ${transport}`, () => {
    it('runs on a terminal of the client size and returns the exit code', async () => {
      const r = await onTerminal(
        ['exec', '-it', 'pod1', '--', 'sh', '-c', 'sleep 0.5; stty size; tty; sleep 0.3; exit 4'],
        env,
        '',
      );
      assert.equal(r.code, 4, r.stdout + r.stderr);
      assert.match(r.stdout, /45 123/);
      assert.match(r.stdout, /\/dev\/pts\/\d+/);
    });

    it('echoes typed input through the terminal', async () => {
      const r = await onTerminal(
        ['exec', '-it', 'pod1', '--', 'sh', '-c', 'read x; echo "got:$x"'],
        env,
        'hello\r',
      );
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.match(r.stdout, /got:hello/);
    });
  });
}

describe('kubectl attach', () => {
  for (const [transport, env] of [
    ['SPDY', SPDY],
    ['WebSocket', WS],
  ] as const) {
    it(`attaches to stdin, stdout and stderr without a tty over ${transport}`, async () => {
      const id = await fixture.container(['sh', '-c', 'read line; echo "got $line"; echo oops >&2'], {
        stdin: true,
        stdinOnce: true,
      });
      const attachShim = await fixture.shim([{ name: 'c', id, stdin: true }]);
      try {
        const r = await run('/usr/bin/kubectl', ['attach', '-i', 'pod1', '-c', 'c'], {
          env: attachShim.env(env),
          input: 'hello\n',
          timeoutMs: 60_000,
        });
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, /got hello/);
        assert.match(r.stderr, /oops/);
      } finally {
        await attachShim.close();
      }
    });

    it(`attaches to a container's terminal and resizes it over ${transport}`, async () => {
      const id = await fixture.container(['sh', '-c', 'read x; sleep 0.5; stty size; echo "tty:$x"'], {
        stdin: true,
        stdinOnce: true,
        tty: true,
      });
      const attachShim = await fixture.shim([{ name: 'c', id, stdin: true, tty: true }]);
      const saved = shim;
      shim = attachShim;
      try {
        const r = await onTerminal(['attach', '-it', 'pod1', '-c', 'c'], env, 'word\r', 101, 33);
        assert.match(r.stdout, /33 101/, r.stdout + r.stderr);
        assert.match(r.stdout, /tty:word/);
      } finally {
        shim = saved;
        await attachShim.close();
      }
    });
  }
});

/** Starts `kubectl port-forward pod1 :PORT`; resolves with the local port kubectl listens on. */
async function portForward(env: Record<string, string>, remotePort: number) {
  const child = spawn('/usr/bin/kubectl', ['port-forward', 'pod1', `:${remotePort}`], {
    env: pfShim.env(env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      const match = /Forwarding from 127\.0\.0\.1:(\d+)/.exec(out);
      if (match) resolve(Number(match[1]));
    });
    child.once('exit', (code) => reject(new Error(`kubectl port-forward exited with ${code}: ${stderr}`)));
  });
  return {
    port,
    stderr: () => stderr,
    stop: () => {
      child.kill('SIGKILL');
    },
  };
}

/** Sends `size` bytes of varied content and reads the echo; returns both SHA-256 digests. */
async function echoTransfer(
  port: number,
  size: number,
): Promise<{ sent: string; received: string; bytes: number }> {
  const socket = connect(port, '127.0.0.1');
  const sentHash = createHash('sha256');
  const receivedHash = createHash('sha256');
  let received = 0;
  const done = new Promise<void>((resolve, reject) => {
    socket.on('data', (chunk: Buffer) => {
      receivedHash.update(chunk);
      received += chunk.length;
      if (received >= size) socket.end();
    });
    socket.once('close', () => resolve());
    socket.once('error', reject);
  });
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  let sent = 0;
  let counter = 0;
  while (sent < size) {
    const chunk = randomBytes(Math.min(1 << 20, size - sent));
    chunk.writeUInt32BE(counter++, 0);
    sentHash.update(chunk);
    sent += chunk.length;
    if (!socket.write(chunk)) await new Promise((resolve) => socket.once('drain', resolve));
  }
  await done;
  return { sent: sentHash.digest('hex'), received: receivedHash.digest('hex'), bytes: received };
}

let pfShim: KubeShim;
const ECHO_PORT = 8080;

describe('kubectl port-forward', () => {
  before(async () => {
    await fixture.podNetns('pod-sandbox-pf', ECHO_PORT);
    pfShim = await fixture.shim([{ name: 'main', id: main }], 'pod-sandbox-pf');
  });
  after(() => pfShim?.close());

  for (const [transport, env] of [
    ['SPDY', SPDY],
    ['a WebSocket tunnel', WS],
  ] as const) {
    it(`carries 64 MiB each way through one connection over ${transport}, checksummed`, async () => {
      const pf = await portForward(env, ECHO_PORT);
      try {
        const result = await echoTransfer(pf.port, 64 * 1024 * 1024);
        assert.equal(result.bytes, 64 * 1024 * 1024);
        assert.equal(result.received, result.sent);
      } finally {
        pf.stop();
      }
      const kind = pfShim.upgrades.at(-1);
      assert.equal(kind?.upgrade.toLowerCase(), transport === 'SPDY' ? 'spdy/3.1' : 'websocket');
    });

    it(`serves 20 concurrent connections over ${transport}`, async () => {
      const pf = await portForward(env, ECHO_PORT);
      try {
        const results = await Promise.all(
          Array.from({ length: 20 }, () => echoTransfer(pf.port, 1024 * 1024)),
        );
        for (const r of results) {
          assert.equal(r.bytes, 1024 * 1024);
          assert.equal(r.received, r.sent);
        }
      } finally {
        pf.stop();
      }
    });
  }

  it('reports a closed port on the error stream', async () => {
    const pf = await portForward(SPDY, 9);
    try {
      const socket = connect(pf.port, '127.0.0.1');
      socket.on('error', () => undefined);
      socket.resume();
      await new Promise((resolve) => socket.once('close', resolve));
      const deadline = Date.now() + 10_000;
      while (!/Connection refused/.test(pf.stderr()) && Date.now() < deadline) await setTimeout(50);
      assert.match(pf.stderr(), /error forwarding port 9 to pod pod-sandbox-pf.*Connection refused/);
    } finally {
      pf.stop();
    }
  });
});
