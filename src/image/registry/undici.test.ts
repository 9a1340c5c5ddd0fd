import { it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer, type AddressInfo } from 'node:net';
import { Endpoints } from './hosts.js';
import { undici } from './undici.js';

/** The ALPN protocols a TLS ClientHello offers (extension 16), parsed from its first record. */
function offeredAlpn(hello: Buffer): string[] {
  let at = 5 + 4 + 2 + 32; // record header, handshake header, version, random
  at += 1 + hello[at]!; // session id
  at += 2 + hello.readUInt16BE(at); // cipher suites
  at += 1 + hello[at]!; // compression methods
  const end = at + 2 + hello.readUInt16BE(at);
  at += 2;
  while (at + 4 <= end) {
    const type = hello.readUInt16BE(at);
    const length = hello.readUInt16BE(at + 2);
    if (type === 16) {
      const protocols: string[] = [];
      for (let p = at + 6; p < at + 4 + length; p += 1 + hello[p]!) {
        protocols.push(hello.subarray(p + 1, p + 1 + hello[p]!).toString('latin1'));
      }
      return protocols;
    }
    at += 4 + length;
  }
  return [];
}

it('a registry connection offers HTTP/1.1 only', async () => {
  const hello = new Promise<Buffer>((resolve) => {
    const server = createServer((socket) => {
      let data = Buffer.alloc(0);
      socket.on('data', (chunk: Buffer) => {
        data = Buffer.concat([data, chunk]);
        if (data.length >= 5 && data.length >= 5 + data.readUInt16BE(3)) {
          socket.destroy();
          server.close();
          resolve(data);
        }
      });
    });
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      void (async () => {
        const [endpoint] = await new Endpoints(() => ({})).forRegistry(`127.0.0.1:${port}`);
        const { request } = await undici();
        await request(new URL(`https://127.0.0.1:${port}/v2/`), {
          method: 'GET',
          dispatcher: endpoint!.dispatcher,
        }).catch(
          () => undefined, // the server hangs up after the ClientHello
        );
      })();
    });
  });
  assert.deepEqual(offeredAlpn(await hello), ['http/1.1']);
});

it('loading undici for pulls leaves node:http2 unloaded', async () => {
  // A fresh process: this one's test runner may have loaded it.
  const script = `
    const { undici } = await import(${JSON.stringify(new URL('./undici.js', import.meta.url).href)});
    await undici();
    process.stdout.write(JSON.stringify(process.moduleLoadList.filter((m) => m.includes('http2'))));
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  assert.equal(code, 0);
  assert.deepEqual(JSON.parse(out), []);
});
