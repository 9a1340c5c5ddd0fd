import { it } from 'node:test';
import assert from 'node:assert/strict';
import { Container, ContainerState, ListContainersResponse } from '../generated/api.js';
import { serializeListContainers } from './list-encoding.js';

function container(id: string, labelBytes: number): Container {
  return Container.fromPartial({
    id,
    podSandboxId: `pod-${id}`,
    metadata: { name: `c-${id}`, attempt: 2 },
    image: { image: 'sha256:abc', userSpecifiedImage: 'busybox' },
    imageRef: 'sha256:abc',
    imageId: 'sha256:abc',
    state: ContainerState.CONTAINER_RUNNING,
    createdAt: 1733389200123456789n,
    labels: { big: 'x'.repeat(labelBytes), 'io.kubernetes.pod.name': 'p' },
    annotations: { a: 'b' },
  });
}

it('writes exactly what the generic encoder writes, for 1-, 2- and 3-byte lengths', () => {
  // Message sizes under 128 bytes, under 16 KiB, and over it.
  const cases = [[], [container('a', 0)], [container('b', 500), container('c', 0)], [container('d', 20_000)]];
  for (const containers of cases) {
    const expected = Buffer.from(ListContainersResponse.encode({ containers }).finish());
    assert.deepEqual(serializeListContainers({ containers }), expected);
    // The second time from the kept bytes: still the same.
    assert.deepEqual(serializeListContainers({ containers }), expected);
    assert.deepEqual(
      ListContainersResponse.decode(serializeListContainers({ containers })).containers,
      containers,
    );
  }
});

it('a new message object for the same container is encoded afresh, not served stale', () => {
  const running = container('e', 10);
  serializeListContainers({ containers: [running] });
  const exited = { ...running, state: ContainerState.CONTAINER_EXITED };
  const decoded = ListContainersResponse.decode(serializeListContainers({ containers: [exited] }));
  assert.equal(decoded.containers[0]!.state, ContainerState.CONTAINER_EXITED);
});
