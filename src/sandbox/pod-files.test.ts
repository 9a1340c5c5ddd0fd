import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, writeFile, readdir } from 'node:fs/promises';
import { tmpdir, hostname } from 'node:os';
import { join } from 'node:path';
import {
  renderHosts,
  renderResolvConf,
  writePodFiles,
  writePodHosts,
  validateDnsConfig,
} from './pod-files.js';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'berth-podfiles-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

test('DNSConfig becomes search, nameserver and options lines', async () => {
  const podDir = join(dir, 'pod1');
  const files = await writePodFiles({
    podId: 'pod1',
    podDir,
    hostname: 'web-0',
    dns: {
      servers: ['10.96.0.10', 'fd00::a'],
      searches: ['default.svc.cluster.local', 'svc.cluster.local', 'cluster.local'],
      options: ['ndots:5', 'edns0'],
    },
    hostNetwork: false,
    ips: ['10.1.0.5', 'fd00:1::5'],
  });
  assert.equal(
    await readFile(files.resolvConfPath, 'utf8'),
    'search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\nnameserver fd00::a\noptions ndots:5 edns0\n',
  );
  assert.equal(await readFile(files.hostnamePath, 'utf8'), 'web-0\n');
  const hosts = await readFile(files.hostsPath, 'utf8');
  assert.match(hosts, /^127\.0\.0\.1\tlocalhost$/m);
  assert.match(hosts, /^::1\tlocalhost ip6-localhost ip6-loopback$/m);
  assert.match(hosts, /^10\.1\.0\.5\tweb-0$/m);
  assert.match(hosts, /^fd00:1::5\tweb-0$/m);
  for (const p of [files.resolvConfPath, files.hostnamePath, files.hostsPath]) {
    assert.equal((await stat(p)).mode & 0o777, 0o644, p);
  }
  // Atomic writes leave no temp files behind.
  assert.deepEqual((await readdir(podDir)).sort(), ['hostname', 'hosts', 'resolv.conf']);
});

test('empty DNSConfig copies the node resolv.conf; host network copies the node hosts file', async () => {
  const hostResolv = join(dir, 'host-resolv.conf');
  const hostHosts = join(dir, 'host-hosts');
  await writeFile(hostResolv, 'nameserver 192.0.2.53\nsearch example.test\n');
  await writeFile(hostHosts, '127.0.0.1 localhost\n192.0.2.1 node1\n');
  const files = await writePodFiles({
    podId: 'pod2',
    podDir: join(dir, 'pod2'),
    hostname: '',
    dns: { servers: [], searches: [], options: [] },
    hostNetwork: true,
    ips: [],
    hostResolvConf: hostResolv,
    hostHosts,
  });
  assert.equal(await readFile(files.resolvConfPath, 'utf8'), 'nameserver 192.0.2.53\nsearch example.test\n');
  assert.equal(await readFile(files.hostsPath, 'utf8'), '127.0.0.1 localhost\n192.0.2.1 node1\n');
  assert.equal(files.hostname, hostname());
  // Missing DNSConfig is the same as empty.
  const again = await writePodFiles({
    podId: 'pod3',
    podDir: join(dir, 'pod3'),
    hostname: 'x',
    hostNetwork: false,
    ips: [],
    hostResolvConf: hostResolv,
  });
  assert.equal(await readFile(again.resolvConfPath, 'utf8'), 'nameserver 192.0.2.53\nsearch example.test\n');
});

test('only the options given are written (dnsPolicy None with options only)', () => {
  assert.equal(renderResolvConf({ servers: [], searches: [], options: ['ndots:2'] }), 'options ndots:2\n');
});

test('bad DNS entries and hostnames are refused before anything is written', async () => {
  const podDir = join(dir, 'bad');
  const base = { podId: 'bad', podDir, hostname: 'ok', hostNetwork: false, ips: [] };
  const cases: [Partial<Parameters<typeof writePodFiles>[0]>, RegExp][] = [
    [
      { dns: { servers: ['not-an-ip'], searches: [], options: [] } },
      /DNS server "not-an-ip" is not an IP address/,
    ],
    [{ dns: { servers: ['1.2.3.4\nnameserver 6.6.6.6'], searches: [], options: [] } }, /not an IP address/],
    [{ dns: { servers: [], searches: ['bad domain'], options: [] } }, /search domain "bad domain"/],
    [{ dns: { servers: [], searches: ['a.b\nnameserver 1.1.1.1'], options: [] } }, /not a valid DNS name/],
    [{ dns: { servers: [], searches: [], options: ['ndots 5'] } }, /DNS option "ndots 5"/],
    [
      { dns: { servers: [], searches: Array.from({ length: 33 }, (_, i) => `d${i}.example`), options: [] } },
      /33 DNS search domains given, at most 32/,
    ],
    [{ hostname: 'bad_host' }, /hostname "bad_host" is not a valid host name/],
    [{ hostname: 'a'.repeat(65) }, /is not a valid host name/],
    [{ hostname: '-lead' }, /is not a valid host name/],
  ];
  for (const [override, pattern] of cases) {
    await assert.rejects(writePodFiles({ ...base, ...override }), (err: Error & { code?: number }) => {
      assert.match(err.message, pattern);
      assert.match(err.message, /pod bad/);
      assert.equal(err.code, 3);
      return true;
    });
  }
  await assert.rejects(stat(podDir), /ENOENT/);
});

test('validateDnsConfig accepts IPv6 servers with a zone and trailing-dot domains', () => {
  validateDnsConfig('p', {
    servers: ['fe80::1%eth0', '::1'],
    searches: ['example.com.'],
    options: ['timeout:2', 'rotate'],
  });
});

test('writePodHosts rewrites the hosts file with the pod IPs', async () => {
  const podDir = join(dir, 'pod4');
  const path = await writePodHosts(podDir, 'h4', ['10.2.0.9']);
  assert.equal(await readFile(path, 'utf8'), renderHosts('h4', ['10.2.0.9']));
  await writePodHosts(podDir, 'h4', ['10.2.0.10']);
  assert.match(await readFile(path, 'utf8'), /^10\.2\.0\.10\th4$/m);
  assert.doesNotMatch(await readFile(path, 'utf8'), /10\.2\.0\.9/);
});
