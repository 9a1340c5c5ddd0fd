/**
 * The server side of bench/stream in its own process (so the benchmark's
 * clients, kubectl's API shim and berth's streaming server do not share one
 * event loop): a StreamFixture with one running container and a pod netns
 * whose servers sink or source bytes. Driven over IPC by main.ts.
 */
import { StreamFixture } from '../../test/integration/stream-fixture.js';
import { execTrueRequest } from '../lib/pod-configs.js';

export type Request =
  | { op: 'setup'; sinkPort: number; sourcePort: number; sourceBytes: number }
  | { op: 'exec-url' }
  | { op: 'pf-url' }
  | { op: 'cpu' }
  | { op: 'cleanup' };

export interface SetupReply {
  containerId: string;
  netnsPath: string;
  runtime: string;
  runtimeRoot: string;
}

const fixture = new StreamFixture();
let containerId = '';
const POD = 'bench-pod';

async function handle(request: Request): Promise<unknown> {
  switch (request.op) {
    case 'setup': {
      await fixture.setup();
      containerId = await fixture.container(['sleep', '100000']);
      const netnsPath = await fixture.podNetns(POD, 9000);
      await fixture.serveInNetns(netnsPath, request.sinkPort, 'sink');
      await fixture.serveInNetns(netnsPath, request.sourcePort, `source:${request.sourceBytes}`);
      const reply: SetupReply = {
        containerId,
        netnsPath,
        runtime: fixture.handler.path,
        runtimeRoot: fixture.handler.root,
      };
      return reply;
    }
    case 'exec-url':
      return fixture.server.exec(execTrueRequest(containerId));
    case 'pf-url':
      return fixture.server.portForward({ podSandboxId: POD, port: [] });
    case 'cpu': {
      // This process's CPU time so far, in ms (berth's share of a transfer).
      const { user, system } = process.cpuUsage();
      return (user + system) / 1000;
    }
    case 'cleanup':
      await fixture.cleanup();
      return null;
  }
}

process.on('message', (message: { id: number; request: Request }) => {
  handle(message.request).then(
    (value) => process.send!({ id: message.id, value }),
    (err: unknown) =>
      process.send!({ id: message.id, error: err instanceof Error ? err.message : String(err) }),
  );
});
process.send!({ ready: true });
