import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SecurityProfile_ProfileType } from '../../generated/api.js';
import { FailedPreconditionError, InvalidArgumentError } from '../../errors.js';
import { CLONE_NAMESPACE_FLAGS, defaultSeccompProfile } from './default-profile.js';
import { convertProfile, effectiveProfile, seccompFor } from './index.js';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'berth-seccomp-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const DEFAULT_CAPS = [
  'CAP_CHOWN',
  'CAP_KILL',
  'CAP_SETUID',
  'CAP_SETGID',
  'CAP_NET_BIND_SERVICE',
  'CAP_SYS_CHROOT',
];
const allowed = (p: ReturnType<typeof defaultSeccompProfile>) =>
  new Set(p.syscalls!.filter((s) => s.action === 'SCMP_ACT_ALLOW' && !s.args).flatMap((s) => s.names));

test('RuntimeDefault is an allow-list that fails other calls with an errno', () => {
  const p = defaultSeccompProfile(DEFAULT_CAPS, 'x64');
  assert.equal(p.defaultAction, 'SCMP_ACT_ERRNO');
  assert.deepEqual(p.architectures, ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32']);
  const names = allowed(p);
  for (const call of [
    'read',
    'write',
    'openat',
    'execve',
    'exit_group',
    'futex',
    'mmap',
    'arch_prctl',
    'chroot',
  ]) {
    assert.ok(names.has(call), call);
  }
  // Dangerous calls stay closed without their capability.
  for (const call of [
    'mount',
    'umount2',
    'unshare',
    'setns',
    'reboot',
    'init_module',
    'kexec_load',
    'bpf',
    'keyctl',
    'add_key',
    'open_by_handle_at',
    'clock_settime',
    'swapon',
    'pivot_root',
  ]) {
    assert.ok(!names.has(call), call);
  }
  // clone only without namespace flags; clone3 ENOSYS so libc falls back.
  const clone = p.syscalls!.find((s) => s.names.includes('clone'))!;
  assert.deepEqual(clone.args, [
    { index: 0, value: CLONE_NAMESPACE_FLAGS, valueTwo: 0, op: 'SCMP_CMP_MASKED_EQ' },
  ]);
  assert.equal(CLONE_NAMESPACE_FLAGS, 0x7e020000);
  const clone3 = p.syscalls!.find((s) => s.names.includes('clone3'))!;
  assert.equal(clone3.action, 'SCMP_ACT_ERRNO');
  assert.equal(clone3.errnoRet, 38);
  // socket: everything but AF_ALG (38) and AF_VSOCK (40).
  const socket = p.syscalls!.filter((s) => s.names.includes('socket'));
  assert.deepEqual(
    socket.map((s) => s.args),
    [
      [{ index: 0, value: 38, op: 'SCMP_CMP_LT' }],
      [{ index: 0, value: 39, op: 'SCMP_CMP_EQ' }],
      [{ index: 0, value: 40, op: 'SCMP_CMP_GT' }],
    ],
  );
  assert.ok(p.syscalls!.some((s) => s.names.includes('personality')));
});

test('capabilities open their calls; CAP_SYS_ADMIN lifts the clone restriction', () => {
  const admin = defaultSeccompProfile(
    [...DEFAULT_CAPS, 'CAP_SYS_ADMIN', 'CAP_SYS_PTRACE', 'CAP_SYS_TIME'],
    'arm64',
  );
  const names = allowed(admin);
  for (const call of ['mount', 'unshare', 'setns', 'clone', 'clone3', 'kcmp', 'clock_settime', 'set_tls'])
    assert.ok(names.has(call), call);
  assert.ok(!names.has('arch_prctl'));
  assert.ok(!admin.syscalls!.some((s) => s.action === 'SCMP_ACT_ERRNO'));
  assert.deepEqual(admin.architectures, ['SCMP_ARCH_AARCH64', 'SCMP_ARCH_ARM']);
});

test('deprecated profile paths map to profiles', () => {
  assert.equal(effectiveProfile(undefined, '', 'c').profileType, SecurityProfile_ProfileType.Unconfined);
  assert.equal(
    effectiveProfile(undefined, 'runtime/default', 'c').profileType,
    SecurityProfile_ProfileType.RuntimeDefault,
  );
  assert.deepEqual(effectiveProfile(undefined, 'localhost//x.json', 'c'), {
    profileType: SecurityProfile_ProfileType.Localhost,
    localhostRef: '/x.json',
  });
  assert.throws(() => effectiveProfile(undefined, 'bogus', 'c'), InvalidArgumentError);
});

test('privileged and Unconfined get no filter; no seccomp in the kernel is an error for profiles', async () => {
  const opts = { privileged: false, seccompEnabled: true, capabilities: DEFAULT_CAPS, what: 'c' };
  assert.equal(
    await seccompFor({ profileType: SecurityProfile_ProfileType.Unconfined, localhostRef: '' }, opts),
    undefined,
  );
  assert.equal(
    await seccompFor(
      { profileType: SecurityProfile_ProfileType.RuntimeDefault, localhostRef: '' },
      { ...opts, privileged: true },
    ),
    undefined,
  );
  assert.ok(
    await seccompFor({ profileType: SecurityProfile_ProfileType.RuntimeDefault, localhostRef: '' }, opts),
  );
  await assert.rejects(
    seccompFor(
      { profileType: SecurityProfile_ProfileType.RuntimeDefault, localhostRef: '' },
      { ...opts, seccompEnabled: false },
    ),
    FailedPreconditionError,
  );
});

test('Localhost profiles: read, validated, Docker format converted', async () => {
  const opts = { privileged: false, seccompEnabled: true, capabilities: DEFAULT_CAPS, what: 'container "c"' };
  const oci = join(dir, 'oci.json');
  await writeFile(
    oci,
    JSON.stringify({
      defaultAction: 'SCMP_ACT_ALLOW',
      syscalls: [{ names: ['mkdir', 'mkdirat'], action: 'SCMP_ACT_ERRNO', errnoRet: 1 }],
    }),
  );
  assert.deepEqual(
    await seccompFor({ profileType: SecurityProfile_ProfileType.Localhost, localhostRef: oci }, opts),
    {
      defaultAction: 'SCMP_ACT_ALLOW',
      syscalls: [{ names: ['mkdir', 'mkdirat'], action: 'SCMP_ACT_ERRNO', errnoRet: 1 }],
    },
  );
  // Relative refs only with a profile root, resolved inside it.
  await mkdir(join(dir, 'profiles'));
  await writeFile(join(dir, 'profiles', 'p.json'), JSON.stringify({ defaultAction: 'SCMP_ACT_LOG' }));
  assert.deepEqual(
    await seccompFor(
      { profileType: SecurityProfile_ProfileType.Localhost, localhostRef: 'p.json' },
      { ...opts, profileRoot: join(dir, 'profiles') },
    ),
    {
      defaultAction: 'SCMP_ACT_LOG',
    },
  );
  await assert.rejects(
    seccompFor({ profileType: SecurityProfile_ProfileType.Localhost, localhostRef: 'p.json' }, opts),
    /is not an absolute path/,
  );
  await assert.rejects(
    seccompFor(
      { profileType: SecurityProfile_ProfileType.Localhost, localhostRef: join(dir, 'missing.json') },
      opts,
    ),
    (err: Error) =>
      err instanceof InvalidArgumentError &&
      /container "c": seccomp profile .*missing.json does not exist/.test(err.message),
  );
  await writeFile(join(dir, 'bad.json'), '{"defaultAction": ');
  await assert.rejects(
    seccompFor(
      { profileType: SecurityProfile_ProfileType.Localhost, localhostRef: join(dir, 'bad.json') },
      opts,
    ),
    /is not JSON/,
  );
  await assert.rejects(
    seccompFor({ profileType: SecurityProfile_ProfileType.Localhost, localhostRef: dir }, opts),
    /not a regular file/,
  );

  const docker = convertProfile(
    {
      defaultAction: 'SCMP_ACT_ERRNO',
      archMap: [
        { architecture: 'SCMP_ARCH_X86_64', subArchitectures: ['SCMP_ARCH_X86'] },
        { architecture: 'SCMP_ARCH_AARCH64', subArchitectures: ['SCMP_ARCH_ARM'] },
      ],
      syscalls: [
        { name: 'read', action: 'SCMP_ACT_ALLOW' },
        { names: ['mount'], action: 'SCMP_ACT_ALLOW', includes: { caps: ['CAP_SYS_ADMIN'] } },
        { names: ['chroot'], action: 'SCMP_ACT_ALLOW', excludes: { caps: ['CAP_SYS_ADMIN'] } },
      ],
    },
    DEFAULT_CAPS,
    'p',
  );
  assert.deepEqual(
    docker.syscalls!.map((s) => s.names[0]),
    ['read', 'chroot'],
  );
  assert.equal(docker.architectures!.length, 2);
  assert.throws(() => convertProfile({ defaultAction: 'ALLOW' }, [], 'p'), /is not a seccomp action/);
  assert.throws(
    () =>
      convertProfile({ defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ action: 'SCMP_ACT_ALLOW' }] }, [], 'p'),
    /needs syscall names/,
  );
  assert.throws(
    () =>
      convertProfile(
        {
          defaultAction: 'SCMP_ACT_ALLOW',
          syscalls: [
            { names: ['x'], action: 'SCMP_ACT_ALLOW', args: [{ index: 9, value: 1, op: 'SCMP_CMP_EQ' }] },
          ],
        },
        [],
        'p',
      ),
    /index must be 0..5/,
  );
});
