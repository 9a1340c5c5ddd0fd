import { test } from 'node:test';
import assert from 'node:assert/strict';
import { normalizeSysctlName, validateSysctls } from './sysctls.js';

const own = { hostNetwork: false, hostIpc: false };

test('namespaced sysctls are accepted in dot form', () => {
  const input = {
    'kernel.shmmax': '68719476736',
    'kernel.shm_rmid_forced': '1',
    'kernel.msgmax': '65536',
    'kernel.sem': '250 32000 100 128',
    'fs.mqueue.msg_max': '20',
    'net.ipv4.ip_unprivileged_port_start': '0',
    'net.core.somaxconn': '1024',
  };
  assert.deepEqual(validateSysctls(input, own), input);
});

test('slash-separated names become dot form, dots inside components become slashes', () => {
  assert.equal(normalizeSysctlName('net/ipv4/conf/eth0.100/forwarding'), 'net.ipv4.conf.eth0/100.forwarding');
  assert.equal(normalizeSysctlName('net.ipv4.ip_forward'), 'net.ipv4.ip_forward');
  assert.deepEqual(validateSysctls({ 'net/ipv4/ip_forward': '1' }, own), { 'net.ipv4.ip_forward': '1' });
});

test('non-namespaced sysctls are refused, naming the sysctl', () => {
  for (const name of [
    'kernel.hostname',
    'vm.swappiness',
    'kernel.pid_max',
    'fs.file-max',
    'kernel.domainname',
  ]) {
    assert.throws(
      () => validateSysctls({ [name]: '1' }, own),
      (err: Error & { code?: number }) =>
        err.message.includes(name) && /not namespaced/.test(err.message) && err.code === 3,
    );
  }
});

test('net.* refused with host network, IPC sysctls refused with host IPC', () => {
  assert.throws(
    () => validateSysctls({ 'net.core.somaxconn': '1' }, { hostNetwork: true, hostIpc: false }),
    /net\.core\.somaxconn cannot be set: the pod uses the host's network namespace/,
  );
  assert.throws(
    () => validateSysctls({ 'kernel.msgmax': '1' }, { hostNetwork: false, hostIpc: true }),
    /kernel\.msgmax cannot be set: the pod uses the host's IPC namespace/,
  );
  assert.throws(
    () => validateSysctls({ 'fs.mqueue.queues_max': '1' }, { hostNetwork: false, hostIpc: true }),
    /host's IPC namespace/,
  );
  // Host network does not affect IPC ones and vice versa.
  assert.deepEqual(validateSysctls({ 'kernel.sem': '1 2 3 4' }, { hostNetwork: true, hostIpc: false }), {
    'kernel.sem': '1 2 3 4',
  });
  assert.deepEqual(validateSysctls({ 'net.ipv4.ip_forward': '1' }, { hostNetwork: false, hostIpc: true }), {
    'net.ipv4.ip_forward': '1',
  });
});

test('names that could escape /proc/sys and values with newlines are refused', () => {
  for (const name of [
    'net..ipv4',
    'net/ipv4/../../kernel/x',
    'net.ipv4.conf.a/../b',
    'net',
    '',
    'net.ipv4 .x',
  ]) {
    assert.throws(
      () => validateSysctls({ [name]: '1' }, own),
      /not a valid sysctl name|not namespaced/,
      name,
    );
  }
  assert.throws(() => validateSysctls({ 'net.core.somaxconn': '1\n2' }, own), /control character/);
});

test('the same sysctl in both notations is refused', () => {
  assert.throws(
    () => validateSysctls({ 'net.ipv4.ip_forward': '1', 'net/ipv4/ip_forward': '0' }, own),
    /given twice/,
  );
});
