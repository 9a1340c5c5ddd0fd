import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ContainerEventType as T } from '../generated/api.js';
import type { ContainerRecord } from '../container/record.js';
import type { SandboxRecord } from '../sandbox/types.js';
import { containerTransitions, sandboxTransitions } from './container-events.js';

const c = (fields: Partial<ContainerRecord>) =>
  ({ id: 'c', podSandboxId: 'p', phase: 'created', ...fields }) as ContainerRecord;
const s = (phase: SandboxRecord['phase']) => ({ id: 'p', phase }) as SandboxRecord;

test('container transitions: creating is invisible, each step reported once', () => {
  assert.deepEqual(containerTransitions(undefined, c({ phase: 'creating' })), []);
  assert.deepEqual(containerTransitions(c({ phase: 'creating' }), c({})), [T.CONTAINER_CREATED_EVENT]);
  assert.deepEqual(containerTransitions(c({}), c({ startedAtNs: '1' })), [T.CONTAINER_STARTED_EVENT]);
  assert.deepEqual(containerTransitions(c({ startedAtNs: '1' }), c({ startedAtNs: '1', resources: {} })), []);
  assert.deepEqual(
    containerTransitions(c({ startedAtNs: '1' }), c({ startedAtNs: '1', finishedAtNs: '2' })),
    [T.CONTAINER_STOPPED_EVENT],
  );
  assert.deepEqual(containerTransitions(c({}), undefined), [T.CONTAINER_DELETED_EVENT]);
  // A create that failed and was rolled back never existed for kubelet.
  assert.deepEqual(containerTransitions(c({ phase: 'creating' }), undefined), []);
});

test('sandbox transitions', () => {
  assert.deepEqual(sandboxTransitions(undefined, s('creating')), []);
  assert.deepEqual(sandboxTransitions(s('creating'), s('ready')), [
    T.CONTAINER_CREATED_EVENT,
    T.CONTAINER_STARTED_EVENT,
  ]);
  assert.deepEqual(sandboxTransitions(s('ready'), s('ready')), []);
  assert.deepEqual(sandboxTransitions(s('ready'), s('notready')), [T.CONTAINER_STOPPED_EVENT]);
  assert.deepEqual(sandboxTransitions(s('notready'), s('notready')), []);
  assert.deepEqual(sandboxTransitions(s('notready'), undefined), [T.CONTAINER_DELETED_EVENT]);
  assert.deepEqual(sandboxTransitions(s('creating'), undefined), []);
});
