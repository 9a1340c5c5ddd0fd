/**
 * kubectl (a real, independent client) against berth's streaming server
 * through the API shim: exec with and without a tty over WebSocket and SPDY,
 * exit codes, stdin, attach, and port-forward.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { StreamFixture, kubectl } from './stream-fixture.js';
import type { KubeShim } from '../helpers/kube-shim.js';

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
