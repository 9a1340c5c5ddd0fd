import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NamespaceMode, NamespaceOption, type IDMapping } from '../../generated/api.js';
import { InvalidArgumentError } from '../../errors.js';
import {
  checkUserMapped,
  containerUserns,
  hostIdOf,
  idMapArg,
  ociMappings,
  podUserns,
  type PodUserns,
} from './mappings.js';

const what = 'pod sandbox p';
const range: IDMapping = { containerId: 0, hostId: 1000, length: 100000 };

function options(mode: NamespaceMode, uids: IDMapping[] = [], gids: IDMapping[] = uids, extra = {}) {
  return NamespaceOption.fromPartial({ usernsOptions: { mode, uids, gids }, ...extra });
}

function refused(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof InvalidArgumentError, `not InvalidArgument: ${String(err)}`);
    assert.match(err.message, pattern);
    assert.match(err.message, /pod sandbox p/);
    return true;
  });
}

test('no user namespace options and mode NODE mean the host user namespace', () => {
  assert.equal(podUserns(undefined, what), undefined);
  assert.equal(podUserns(NamespaceOption.fromPartial({}), what), undefined);
  assert.equal(podUserns(options(NamespaceMode.NODE), what), undefined);
});

test('mode POD with one range from container ID 0 is a pod user namespace', () => {
  const gid: IDMapping = { containerId: 0, hostId: 5000, length: 65536 };
  assert.deepEqual(podUserns(options(NamespaceMode.POD, [range], [gid]), what), {
    uids: [range],
    gids: [gid],
  });
});

test('modes CONTAINER and TARGET are refused by name', () => {
  refused(() => podUserns(options(NamespaceMode.CONTAINER), what), /mode CONTAINER is not supported/);
  refused(() => podUserns(options(NamespaceMode.TARGET), what), /mode TARGET is not supported/);
});

test('more than one mapping is refused, for uids and for gids', () => {
  const two = [range, { containerId: 0, hostId: 2000, length: 100000 }];
  refused(() => podUserns(options(NamespaceMode.POD, two), what), /exactly one uid mapping, but 2/);
  refused(() => podUserns(options(NamespaceMode.POD, [range], two), what), /exactly one gid mapping, but 2/);
});

test('a mapping that leaves container ID 0 unmapped is refused', () => {
  refused(
    () => podUserns(options(NamespaceMode.POD, [{ containerId: 1, hostId: 1000, length: 100000 }]), what),
    /must map container ID 0 \(root\), but it starts at container ID 1/,
  );
});

test('missing, empty, negative and overflowing mappings are refused', () => {
  refused(() => podUserns(options(NamespaceMode.POD, []), what), /needs a uid mapping/);
  refused(() => podUserns(options(NamespaceMode.POD, [range], []), what), /needs a gid mapping/);
  refused(
    () => podUserns(options(NamespaceMode.POD, [{ containerId: 0, hostId: 1, length: 0 }]), what),
    /length 0/,
  );
  refused(
    () => podUserns(options(NamespaceMode.POD, [{ containerId: 0, hostId: -5, length: 10 }]), what),
    /host ID -5 is out of range/,
  );
  refused(
    () => podUserns(options(NamespaceMode.POD, [{ containerId: 0, hostId: 4294967000, length: 1000 }]), what),
    /runs past the largest ID/,
  );
});

test('mode NODE with mappings is refused', () => {
  refused(() => podUserns(options(NamespaceMode.NODE, [range]), what), /NODE .* takes no ID mappings/);
});

test("a pod user namespace beside the host's network, IPC or PID namespace is refused", () => {
  for (const [key, name] of [
    ['network', 'network'],
    ['ipc', 'IPC'],
    ['pid', 'PID'],
  ] as const) {
    refused(
      () => podUserns(options(NamespaceMode.POD, [range], [range], { [key]: NamespaceMode.NODE }), what),
      new RegExp(`host's ${name} namespace`),
    );
  }
});

test("containers follow their pod's user namespace; other asks are refused", () => {
  const pod: PodUserns = { uids: [range], gids: [range] };
  assert.equal(containerUserns(undefined, pod, what), pod);
  assert.equal(containerUserns(undefined, undefined, what), undefined);
  assert.equal(containerUserns(options(NamespaceMode.POD, [range]), pod, what), pod);
  assert.equal(containerUserns(options(NamespaceMode.NODE), undefined, what), undefined);
  refused(() => containerUserns(options(NamespaceMode.NODE), pod, what), /host's user namespace/);
  refused(() => containerUserns(options(NamespaceMode.POD, [range]), undefined, what), /host's user/);
  refused(() => containerUserns(options(NamespaceMode.CONTAINER), pod, what), /CONTAINER is not supported/);
  refused(() => containerUserns(options(NamespaceMode.TARGET), pod, what), /TARGET is not supported/);
  refused(
    () => containerUserns(options(NamespaceMode.POD, [{ ...range, hostId: 7 }]), pod, what),
    /differ from its pod sandbox's/,
  );
});

test('mapping forms: helper argument, OCI mappings, host IDs', () => {
  const two = [range, { containerId: 100000, hostId: 500000, length: 10 }];
  assert.equal(idMapArg(two), '0 1000 100000,100000 500000 10');
  assert.deepEqual(ociMappings([range]), [{ containerID: 0, hostID: 1000, size: 100000 }]);
  assert.equal(hostIdOf(two, 0), 1000);
  assert.equal(hostIdOf(two, 99999), 100999);
  assert.equal(hostIdOf(two, 100005), 500005);
  assert.equal(hostIdOf(two, 100010), undefined);
});

test('the process user and groups must be mapped', () => {
  const pod: PodUserns = { uids: [range], gids: [{ containerId: 0, hostId: 1000, length: 10 }] };
  checkUserMapped({ uid: 99999, gid: 9, additionalGids: [0, 9] }, pod, what);
  refused(() => checkUserMapped({ uid: 100000, gid: 0, additionalGids: [] }, pod, what), /user 100000/);
  refused(() => checkUserMapped({ uid: 0, gid: 0, additionalGids: [10] }, pod, what), /group 10/);
});
