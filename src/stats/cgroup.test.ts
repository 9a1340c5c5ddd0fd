import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pbkdf2, pbkdf2Sync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CpuRates, cgroupDirsFor, cgroupDirsOfPid, nowNs, parseProcCgroup, readCgroup } from './cgroup.js';
import { dirUsage, parseNetDev } from './usage.js';

async function tree(files: Record<string, string>): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), 'berth-cg-'));
  for (const [path, content] of Object.entries(files)) {
    await mkdir(join(root, path, '..'), { recursive: true });
    await writeFile(join(root, path), content);
  }
  return root;
}

test('parses /proc/<pid>/cgroup of hybrid and unified hosts', () => {
  const hybrid = parseProcCgroup('4:memory:/a/b\n2:cpu,cpuacct:/a/b\n1:name=systemd:/x\n0::/y\n');
  assert.equal(hybrid.v1.get('memory'), '/a/b');
  assert.equal(hybrid.v1.get('cpuacct'), '/a/b');
  assert.equal(hybrid.v2, '/y');
  assert.deepEqual(parseProcCgroup('0::/kubepods/pod1/c1\n'), { v1: new Map(), v2: '/kubepods/pod1/c1' });
});

test('cgroup v1: cpuacct usage, working set = usage - total_inactive_file, rss, faults, limit', async () => {
  const root = await tree({
    'cpu,cpuacct/pod/c/cpuacct.usage': '123456789\n',
    'memory/pod/c/memory.usage_in_bytes': '10000000\n',
    'memory/pod/c/memory.limit_in_bytes': '16777216\n',
    'memory/pod/c/memory.stat':
      'cache 5\nrss 7\ninactive_file 9\ntotal_rss 4000000\ntotal_inactive_file 3000000\ntotal_pgfault 55\ntotal_pgmajfault 2\n',
    'pids/pod/c/pids.current': '3\n',
    'memory/pod/c/memory.memsw.usage_in_bytes': '12000000\n',
    'memory/pod/c/memory.memsw.limit_in_bytes': '20971520\n',
  });
  try {
    const dirs = await cgroupDirsFor(
      parseProcCgroup('3:cpu,cpuacct:/pod/c\n4:memory:/pod/c\n5:pids:/pod/c\n'),
      root,
    );
    assert.equal(dirs?.version, 1);
    const s = await readCgroup(dirs!);
    assert.equal(s.cpuUsageNs, 123456789n);
    assert.deepEqual(s.memory, {
      usageBytes: 10000000n,
      workingSetBytes: 7000000n,
      rssBytes: 4000000n,
      pageFaults: 55n,
      majorPageFaults: 2n,
      availableBytes: 16777216n - 7000000n,
    });
    assert.equal(s.processCount, 3n);
    // memsw counts memory + swap: 2 MB of swap in use, 4 MiB of swap allowed.
    assert.deepEqual(s.swap, { usageBytes: 2000000n, availableBytes: 4194304n - 2000000n });
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('cgroup v1 without a limit reports no available bytes', async () => {
  const root = await tree({
    'memory/c/memory.usage_in_bytes': '100\n',
    'memory/c/memory.limit_in_bytes': '9223372036854771712\n',
    'memory/c/memory.stat': 'total_inactive_file 200\n',
  });
  try {
    const s = await readCgroup((await cgroupDirsFor(parseProcCgroup('4:memory:/c\n'), root))!);
    assert.equal(s.memory?.workingSetBytes, 0n, 'never negative');
    assert.equal(s.memory?.availableBytes, undefined);
    assert.equal(s.cpuUsageNs, undefined);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('cgroup v2: cpu.stat usage_usec, memory.current/stat/max', async () => {
  const root = await tree({
    'cgroup.controllers': 'cpu memory pids\n',
    'k/c/cpu.stat': 'usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n',
    'k/c/memory.current': '8192000\n',
    'k/c/memory.stat': 'anon 4096000\nfile 100\ninactive_file 1024000\npgfault 10\npgmajfault 1\n',
    'k/c/memory.max': 'max\n',
    'k/c/pids.current': '2\n',
    'k/c/memory.swap.current': '4096\n',
    'k/c/memory.swap.max': 'max\n',
  });
  try {
    const dirs = await cgroupDirsFor(parseProcCgroup('0::/k/c\n'), root);
    assert.deepEqual(dirs, { version: 2, dir: join(root, 'k/c') });
    const s = await readCgroup(dirs!);
    assert.equal(s.cpuUsageNs, 2_500_000n);
    assert.deepEqual(s.memory, {
      usageBytes: 8192000n,
      workingSetBytes: 7168000n,
      rssBytes: 4096000n,
      pageFaults: 10n,
      majorPageFaults: 1n,
    });
    assert.equal(s.processCount, 2n);
    assert.deepEqual(s.swap, { usageBytes: 4096n });
    await writeFile(join(root, 'k/c/memory.max'), '10000000\n');
    assert.equal((await readCgroup(dirs!)).memory?.availableBytes, 10000000n - 7168000n);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('CPU rate from two samples: the first call samples twice, later calls use the previous sample', async () => {
  const rates = new CpuRates(20);
  let calls = 0;
  const second = { timestampNs: 1_100_000_000n, cpuUsageNs: 50_000_000n };
  const r1 = await rates.rate('c', { timestampNs: 1_000_000_000n, cpuUsageNs: 0n }, async () => {
    calls++;
    return second;
  });
  assert.equal(calls, 1);
  assert.deepEqual(
    r1,
    { nanoCores: 500_000_000n, timestampNs: 1_100_000_000n, usageNs: 50_000_000n },
    '50 ms of CPU in 100 ms is half a core',
  );
  const r2 = await rates.rate('c', { timestampNs: 2_100_000_000n, cpuUsageNs: 2_050_000_000n }, async () => {
    throw new Error('no resample expected');
  });
  assert.equal(r2?.nanoCores, 2_000_000_000n, 'two cores');
});

test('real cgroup of this process is readable with plausible values', async () => {
  const dirs = await cgroupDirsOfPid(process.pid);
  assert.ok(dirs);
  const s = await readCgroup(dirs);
  assert.ok(s.cpuUsageNs === undefined || s.cpuUsageNs > 0n);
  if (s.memory) assert.ok(s.memory.usageBytes > 1024n * 1024n, 'node uses more than 1 MiB');
  assert.equal(await cgroupDirsOfPid(2 ** 22 + 7), undefined, 'a gone pid has no cgroup');
});

test('parses /proc/net/dev and walks a directory for usage', async () => {
  const text = `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0
  eth0:    5000      10    3    0    0     0          0         0     7000      12    4    0    0     0       0          0
`;
  assert.deepEqual(parseNetDev(text)[1], {
    name: 'eth0',
    rxBytes: 5000n,
    rxErrors: 3n,
    txBytes: 7000n,
    txErrors: 4n,
  });
  const root = await tree({ 'a/b': 'x'.repeat(10000), c: 'y' });
  try {
    const u = await dirUsage(root);
    assert.equal(u.inodes, 4n, 'root, a, a/b, c');
    assert.ok(u.bytes >= 10000n);
    assert.deepEqual(await dirUsage(join(root, 'missing')), { bytes: 0n, inodes: 0n });
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('the CPU counter and its timestamp are read together, however busy the thread pool', async () => {
  // A counter file that holds the time it was written, rewritten every 2 ms from this thread.
  const root = await tree({ 'cpu,cpuacct/c/cpuacct.usage': `${nowNs()}\n`, 'unified/c/cpu.stat': '' });
  const v1 = join(root, 'cpu,cpuacct/c/cpuacct.usage');
  const v2 = join(root, 'unified/c/cpu.stat');
  const tick = () => {
    const now = nowNs();
    writeFileSync(v1, `${now}\n`);
    writeFileSync(v2, `usage_usec ${now / 1000n}\nuser_usec 0\nsystem_usec 0\n`);
  };
  tick();
  const ticker = setInterval(tick, 2);
  try {
    // Keeps every thread-pool thread busy ~250 ms, as pulls and file work do on a loaded node.
    const t = performance.now();
    pbkdf2Sync('x', 'y', 20_000, 32, 'sha256');
    const iterations = Math.ceil((20_000 * 250) / Math.max(1, performance.now() - t));
    const threads = Number(process.env.UV_THREADPOOL_SIZE ?? 4);
    for (const dirs of [
      await cgroupDirsFor(parseProcCgroup('3:cpu,cpuacct:/c\n'), root),
      { version: 2 as const, dir: join(root, 'unified/c') },
    ]) {
      const busy = Array.from(
        { length: threads },
        () => new Promise((resolve) => pbkdf2('x', 'y', iterations, 32, 'sha256', resolve)),
      );
      const sample = await readCgroup(dirs!);
      await Promise.all(busy);
      const skewMs = Number(sample.cpuUsageNs! - sample.timestampNs) / 1e6;
      assert.ok(
        Math.abs(skewMs) < 50,
        `v${dirs!.version}: counter read ${skewMs.toFixed(1)} ms after its timestamp`,
      );
    }
  } finally {
    clearInterval(ticker);
    await rm(root, { recursive: true, force: true });
  }
});
