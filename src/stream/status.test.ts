import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { encodeOutcome } from './status.js';
import { negotiateProtocol } from './server.js';

describe('exec outcome on the error stream', () => {
  it('is a JSON Status in v4: Success, or NonZeroExitCode with the code as a cause', () => {
    assert.equal(
      encodeOutcome({ kind: 'exit', exitCode: 0 }, true).toString(),
      '{"metadata":{},"status":"Success"}',
    );
    const failure = JSON.parse(encodeOutcome({ kind: 'exit', exitCode: 3 }, true).toString()) as {
      reason: string;
      details: { causes: { reason: string; message: string }[] };
    };
    assert.equal(failure.reason, 'NonZeroExitCode');
    assert.deepEqual(failure.details.causes, [{ reason: 'ExitCode', message: '3' }]);
  });

  it('is plain text before v4, and nothing on success', () => {
    assert.equal(encodeOutcome({ kind: 'exit', exitCode: 0 }, false).length, 0);
    assert.match(encodeOutcome({ kind: 'error', message: 'boom' }, false).toString(), /boom/);
  });
});

describe('X-Stream-Protocol-Version negotiation', () => {
  it("picks the client's first supported protocol", () => {
    assert.deepEqual(
      negotiateProtocol(
        ['v9', 'v4.channel.k8s.io', 'channel.k8s.io'],
        ['channel.k8s.io', 'v4.channel.k8s.io'],
      ),
      {
        ok: true,
        protocol: 'v4.channel.k8s.io',
      },
    );
    assert.deepEqual(negotiateProtocol([], ['a']), { ok: true, protocol: '' });
    const refused = negotiateProtocol(['v9'], ['a', 'b']);
    assert.equal(refused.ok, false);
    assert.match(refused.ok ? '' : refused.message, /client supports \[v9\], server accepts \[a b\]/);
  });
});
