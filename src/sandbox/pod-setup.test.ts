import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { validatePodSysctls } from './pod-setup.js';

const own = { hostNetwork: false, hostIpc: false };

describe('pod sysctls with defaults', () => {
  it('puts the pod’s own values over the defaults', () => {
    assert.deepEqual(
      validatePodSysctls(
        ['net.ipv4.ping_group_range=0 2147483647', 'kernel.shmmni = 100'],
        { 'kernel.shmmni': '200', 'net/ipv4/ip_forward': '1' },
        own,
      ),
      { 'net.ipv4.ping_group_range': '0 2147483647', 'kernel.shmmni': '200', 'net.ipv4.ip_forward': '1' },
    );
  });

  it('leaves out defaults a host-namespace pod cannot take, but refuses its own', () => {
    assert.deepEqual(
      validatePodSysctls(
        ['net.ipv4.ping_group_range=0 1', 'kernel.msgmax=9000'],
        {},
        {
          hostNetwork: true,
          hostIpc: false,
        },
      ),
      { 'kernel.msgmax': '9000' },
    );
    assert.throws(
      () => validatePodSysctls([], { 'net.core.somaxconn': '1024' }, { hostNetwork: true, hostIpc: false }),
      /sysctl net\.core\.somaxconn cannot be set: the pod uses the host's network namespace/,
    );
  });

  it('refuses malformed defaults', () => {
    assert.throws(
      () => validatePodSysctls(['kernel.shmmni'], {}, own),
      /default_sysctls entry "kernel.shmmni" is not KEY=VALUE/,
    );
  });
});
