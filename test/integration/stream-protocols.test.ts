/**
 * The streaming server's protocols driven by berth's own SPDY client and the
 * `ws` client (kubectl covers only what it speaks): remotecommand v1-v4 over
 * SPDY, the WebSocket channel protocols (binary, base64, v4, v5), WebSocket
 * port-forward, token expiry, the in-flight bound, protocol refusal, TLS and
 * the idle timeout.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout } from 'node:timers/promises';
import { WebSocket } from 'ws';
import { StreamFixture } from './stream-fixture.js';
import { selfSignedCert } from '../helpers/certs.js';
import { spdyUpgrade, readText as readAll } from '../../src/stream/spdy/client.js';
import { run } from '../../src/util/run.js';

const fixture = new StreamFixture();
let main: string;

before(async () => {
  await fixture.setup();
  main = await fixture.container(['sleep', '1000']);
  await fixture.podNetns('pod-ws', 8081);
});

after(() => fixture.cleanup());

const execUrl = (cmd: string[], extra: Partial<{ stdin: boolean; tty: boolean; stderr: boolean }> = {}) =>
  fixture.server.exec({
    containerId: main,
    cmd,
    tty: extra.tty ?? false,
    stdin: extra.stdin ?? false,
    stdout: true,
    stderr: extra.stderr ?? true,
  });

describe('remotecommand over SPDY', () => {
  for (const [protocol, expectedError] of [
    ['v4.channel.k8s.io', /"reason":"NonZeroExitCode".*"message":"3"/],
    ['v3.channel.k8s.io', /^command terminated with non-zero exit code: exit status 3$/],
    ['v2.channel.k8s.io', /^command terminated with non-zero exit code: exit status 3$/],
    ['channel.k8s.io', /^command terminated with non-zero exit code: exit status 3$/],
  ] as const) {
    it(`runs a command and reports its exit code in ${protocol}`, async () => {
      const up = await spdyUpgrade(await execUrl(['sh', '-c', 'echo out; echo err >&2; exit 3']), [protocol]);
      assert.equal(up.status, 101, up.head);
      assert.match(up.head, new RegExp(`X-Stream-Protocol-Version: ${protocol.replace(/\./g, '\\.')}`));
      const conn = up.conn!;
      const error = await conn.openStream({ streamType: 'error' });
      const stdout = await conn.openStream({ streamType: 'stdout' });
      const stderr = await conn.openStream({ streamType: 'stderr' });
      error.end();
      stdout.end();
      stderr.end();
      const [e, o, r] = await Promise.all([readAll(error), readAll(stdout), readAll(stderr)]);
      assert.equal(o, 'out\n');
      assert.equal(r, 'err\n');
      assert.match(e, expectedError);
    });
  }

  it('writes an empty status on success before v4 and closes stdin on EOF', async () => {
    const up = await spdyUpgrade(await execUrl(['sh', '-c', 'wc -c'], { stdin: true, stderr: false }), [
      'v3.channel.k8s.io',
    ]);
    const conn = up.conn!;
    const error = await conn.openStream({ streamType: 'error' });
    const stdin = await conn.openStream({ streamType: 'stdin' });
    const stdout = await conn.openStream({ streamType: 'stdout' });
    error.end();
    stdout.end();
    stdin.end('12345');
    const [e, o] = await Promise.all([readAll(error), readAll(stdout)]);
    assert.equal(e, '');
    assert.equal(o.trim(), '5');
  });

  it('refuses unknown protocols with 403 naming the supported ones', async () => {
    const up = await spdyUpgrade(await execUrl(['true']), ['v9.channel.k8s.io']);
    assert.equal(up.status, 403);
    assert.match(up.head, /X-Accepted-Stream-Protocol-Versions: v4\.channel\.k8s\.io/);
  });

  it('answers a reused token with 404', async () => {
    const url = await execUrl(['true']);
    const first = await spdyUpgrade(url, ['v4.channel.k8s.io']);
    first.conn!.destroy();
    assert.equal((await spdyUpgrade(url, ['v4.channel.k8s.io'])).status, 404);
  });
});

/** Opens a WebSocket with one subprotocol; collects messages until the server closes. */
function wsSession(url: string, protocol: string, send: (ws: WebSocket) => void = () => undefined) {
  return new Promise<{ messages: (Buffer | string)[]; code: number; protocol: string }>((resolve, reject) => {
    const ws = new WebSocket(url.replace(/^http/, 'ws'), [protocol]);
    const messages: (Buffer | string)[] = [];
    ws.on('open', () => send(ws));
    ws.on('message', (data: Buffer, isBinary: boolean) => messages.push(isBinary ? data : data.toString()));
    ws.on('close', (code) => resolve({ messages, code, protocol: ws.protocol }));
    ws.on('error', reject);
  });
}

describe('remotecommand over WebSocket', () => {
  it('v5: stdin with the close signal, stdout and a JSON status, then a normal close', async () => {
    const url = await execUrl(['sh', '-c', 'cat; exit 2'], { stdin: true, stderr: false });
    const session = await wsSession(url, 'v5.channel.k8s.io', (ws) => {
      ws.send(Buffer.concat([Buffer.from([0]), Buffer.from('ping')]));
      ws.send(Buffer.from([255, 0]));
    });
    assert.equal(session.protocol, 'v5.channel.k8s.io');
    assert.equal(session.code, 1000);
    const byChannel = (c: number) =>
      Buffer.concat(
        session.messages
          .filter((m): m is Buffer => Buffer.isBuffer(m) && m[0] === c)
          .map((m) => m.subarray(1)),
      ).toString();
    assert.equal(byChannel(1), 'ping');
    assert.match(byChannel(3), /"reason":"NonZeroExitCode".*"message":"2"/);
    // The first message announces the session on the lowest channel berth writes.
    assert.deepEqual(session.messages[0], Buffer.from([1]));
  });

  it('a command that stops reading stdin: the session still ends with a clean close while the client floods', async () => {
    const url = await execUrl(['head', '-c', '3'], { stdin: true, stderr: false });
    const started = Date.now();
    const session = await wsSession(url, 'v5.channel.k8s.io', (ws) => {
      // 16 MiB of stdin queued at once, as a client piping a file does; the command reads 3 bytes.
      const chunk = Buffer.alloc(64 * 1024 + 1, 'z');
      chunk[0] = 0;
      for (let i = 0; i < 256; i++) ws.send(chunk);
    });
    assert.equal(session.code, 1000);
    // Held for ws's 30 s close timeout before: the reader nobody emptied kept the socket paused.
    assert.ok(Date.now() - started < 10_000, `closed after ${Date.now() - started} ms`);
    const stdout = session.messages.filter((m): m is Buffer => Buffer.isBuffer(m) && m[0] === 1);
    assert.equal(Buffer.concat(stdout.map((m) => m.subarray(1))).toString(), 'zzz');
    assert.match(
      Buffer.concat(session.messages.filter((m): m is Buffer => Buffer.isBuffer(m) && m[0] === 3)).toString(),
      /"status":"Success"/,
    );
  });

  for (const [protocol, decode] of [
    ['v4.base64.channel.k8s.io', true],
    ['base64.channel.k8s.io', true],
    ['v4.channel.k8s.io', false],
    ['channel.k8s.io', false],
  ] as const) {
    it(`${protocol}: stdout and stderr on their channels`, async () => {
      const session = await wsSession(await execUrl(['sh', '-c', 'echo out; echo err >&2']), protocol);
      const on = (channel: number) =>
        session.messages
          .map((m) =>
            decode
              ? { c: Number(String(m)[0]), d: Buffer.from(String(m).slice(1), 'base64').toString() }
              : { c: (m as Buffer)[0], d: (m as Buffer).subarray(1).toString() },
          )
          .filter((m) => m.c === channel)
          .map((m) => m.d)
          .join('');
      assert.equal(on(1), 'out\n');
      assert.equal(on(2), 'err\n');
      assert.equal(on(3), protocol.startsWith('v4') ? '{"metadata":{},"status":"Success"}' : '');
    });
  }
});

describe('port forward over WebSocket', () => {
  it('sends the port on both channels, then relays data', async () => {
    const url = await fixture.server.portForward({ podSandboxId: 'pod-ws', port: [8081] });
    const received: Buffer[] = [];
    await new Promise<void>((resolve, reject) => {
      const ws = new WebSocket(url.replace(/^http/, 'ws'), ['v4.channel.k8s.io']);
      ws.on('message', (data: Buffer) => {
        received.push(data);
        const echoed = Buffer.concat(received.filter((m) => m[0] === 0).map((m) => m.subarray(1)));
        if (echoed.toString().endsWith('hello')) ws.close();
      });
      ws.on('open', () => ws.send(Buffer.concat([Buffer.from([0]), Buffer.from('hello')])));
      ws.on('close', () => resolve());
      ws.on('error', reject);
    });
    assert.deepEqual(received[0], Buffer.from([0, 0x91, 0x1f]));
    assert.deepEqual(received[1], Buffer.from([1, 0x91, 0x1f]));
    const data = Buffer.concat(
      received
        .slice(2)
        .filter((m) => m[0] === 0)
        .map((m) => m.subarray(1)),
    );
    assert.equal(data.toString(), 'hello');
  });
});

describe('stream URLs', () => {
  it('expire after streaming.token_ttl_seconds', async () => {
    fixture.config.token_ttl_seconds = 1;
    try {
      const url = await execUrl(['true']);
      await setTimeout(1200);
      assert.equal((await spdyUpgrade(url, ['v4.channel.k8s.io'])).status, 404);
    } finally {
      fixture.config.token_ttl_seconds = 60;
    }
  });

  it('are bounded by streaming.max_in_flight', async () => {
    fixture.config.max_in_flight = 3;
    try {
      const urls = await Promise.all([1, 2, 3].map(() => execUrl(['true'])));
      await assert.rejects(execUrl(['true']), /too many stream requests/);
      for (const url of urls) (await spdyUpgrade(url, ['v9'])).conn?.destroy();
      await execUrl(['true']);
    } finally {
      fixture.config.max_in_flight = 64;
    }
  });

  it('refuses requests that name no stream or a tty with stderr', async () => {
    await assert.rejects(
      fixture.server.exec({
        containerId: main,
        cmd: ['true'],
        tty: false,
        stdin: false,
        stdout: false,
        stderr: false,
      }),
      /one of stdin, stdout and stderr/,
    );
    await assert.rejects(
      fixture.server.attach({ containerId: main, tty: true, stdin: false, stdout: true, stderr: true }),
      /tty and stderr/,
    );
  });
});

describe('TLS and idle timeout', () => {
  const tls = new StreamFixture();
  before(async () => {
    await tls.setup();
    const { cert, key } = await selfSignedCert(tls.dir, {
      commonName: '127.0.0.1',
      ipAddress: '127.0.0.1',
      keyType: 'ec',
    });
    await tls.server.close();
    tls.config.tls_cert_file = cert;
    tls.config.tls_key_file = key;
    tls.config.idle_timeout_seconds = 1;
    const { StreamServer } = await import('../../src/stream/server.js');
    const { silentLogger } = await import('../../src/log.js');
    tls.server = new StreamServer({ config: () => tls.config, backend: tls.backend(), log: silentLogger });
    await tls.server.start();
  });
  after(() => tls.cleanup());

  it('serves https URLs and closes streams idle longer than streaming.idle_timeout_seconds', async () => {
    const id = await tls.container(['sleep', '1000']);
    const url = await tls.server.exec({
      containerId: id,
      cmd: ['sleep', '29.123'],
      tty: false,
      stdin: false,
      stdout: true,
      stderr: false,
    });
    assert.match(url, /^https:\/\/127\.0\.0\.1:\d+\/exec\//);
    const up = await spdyUpgrade(url, ['v4.channel.k8s.io'], { rejectUnauthorized: false });
    assert.equal(up.status, 101);
    const conn = up.conn!;
    await conn.openStream({ streamType: 'error' });
    await conn.openStream({ streamType: 'stdout' });
    const started = Date.now();
    await new Promise((resolve) => conn.once('close', resolve));
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= 800 && elapsed < 10_000, `closed after ${elapsed} ms`);
    // The process went with the connection.
    let left = '?';
    for (let i = 0; i < 100 && left !== ''; i++) {
      left = (await run('pgrep', ['-f', 'sleep 29.123'])).stdout.trim();
      if (left) await setTimeout(50);
    }
    assert.equal(left, '');
  });
});
