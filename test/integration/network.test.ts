/**
 * Pod networking on the real CNI plugins (bridge, host-local, portmap,
 * loopback, tuning): each run uses its own bridge names, subnets, host-local
 * data dir and run_root, and removes bridges, iptables chains and netns
 * afterwards, even when a test fails.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes, randomInt } from 'node:crypto';
import { mkdtemp, mkdir, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createPodNetwork } from '../../src/sandbox/network/index.js';
import { listNetns } from '../../src/sandbox/network/netns.js';
import { masqChainName, splitRule } from '../../src/sandbox/network/masq-cleanup.js';
import type { HostPortMapping, PodIdentity } from '../../src/sandbox/network-types.js';
import type { BerthConfig } from '../../src/config/schema.js';
import { silentLogger } from '../../src/log.js';
import { run, runChecked } from '../../src/util/run.js';
import { startBerth, type RunningBerth } from '../helpers/berth-process.js';

const REPO = join(fileURLToPath(import.meta.url), '..', '..', '..', '..');
const CNI_BIN = ['/usr/lib/cni', '/opt/cni/bin'];

const tag = randomBytes(3).toString('hex');
const octet2 = randomInt(200, 251);
const octet3 = randomInt(0, 240);
/** Subnet number i of this run: 10.<200-250>.<random+i>.0/24, and a ULA /64. */
const subnet4 = (i: number) => `10.${octet2}.${octet3 + i}`;
// Written the way `ip` prints it (no leading zeros, no zero group).
const subnet6 = (i: number) =>
  `fd${tag.slice(0, 2)}:${Number.parseInt(tag.slice(2), 16).toString(16)}:${i + 1}::`;

let dir: string;
const bridges = new Set<string>();
/** network name → pod ids attached to it, for chain clean-up. */
const attachedIds = new Map<string, Set<string>>();
const children = new Set<ChildProcess>();
let berth: RunningBerth | undefined;

interface TestNet {
  name: string;
  bridge: string;
  confDir: string;
  ipamDir: string;
  runRoot: string;
  subnet: number;
  network: ReturnType<typeof createPodNetwork>;
}

/** A network from the shipped deploy conflist with this run's bridge, subnets and IPAM dir. */
async function makeNet(
  i: number,
  edit: (conf: { cniVersion: string; plugins: Record<string, unknown>[] }) => void = () => undefined,
  options: { pluginTimeoutMs?: number; dualStack?: boolean } = {},
): Promise<TestNet> {
  const name = `berth-t${tag}-${i}`;
  const bridge = `bt${tag}${i}`;
  bridges.add(bridge);
  const base = join(dir, `net${i}`);
  const confDir = join(base, 'conf');
  const ipamDir = join(base, 'ipam');
  const runRoot = join(base, 'run');
  await mkdir(confDir, { recursive: true });
  const conf = JSON.parse(await readFile(join(REPO, 'deploy/cni/10-berth-bridge.conflist'), 'utf8')) as {
    name: string;
    cniVersion: string;
    plugins: Record<string, unknown>[];
  };
  conf.name = name;
  const bridgePlugin = conf.plugins.find((p) => p.type === 'bridge')!;
  bridgePlugin.bridge = bridge;
  const ranges: unknown[] = [[{ subnet: `${subnet4(i)}.0/24` }]];
  if (options.dualStack !== false) ranges.push([{ subnet: `${subnet6(i)}/64` }]);
  bridgePlugin.ipam = {
    type: 'host-local',
    dataDir: ipamDir,
    routes: [{ dst: '0.0.0.0/0' }],
    ranges,
  };
  edit(conf);
  await writeFile(join(confDir, '10-test.conflist'), JSON.stringify(conf, null, 2));
  const config = {
    run_root: runRoot,
    network: { cni_conf_dir: confDir, cni_bin_dirs: CNI_BIN, network_name: '' },
  } as unknown as BerthConfig;
  const network = createPodNetwork(() => config, silentLogger, options);
  attachedIds.set(name, new Set());
  return { name, bridge, confDir, ipamDir, runRoot, subnet: i, network };
}

function pod(net: TestNet, label: string): PodIdentity {
  const id = createHash('sha256').update(`${tag}-${net.name}-${label}`).digest('hex');
  attachedIds.get(net.name)!.add(id);
  return { id, name: `pod-${label}`, namespace: 'net-test', uid: `uid-${label}` };
}

/** Chain names the bridge (ipMasq) and portmap plugins derive from network name + container id. */
function chainsFor(name: string, id: string): string[] {
  const hash = createHash('sha512')
    .update(name + id)
    .digest('hex');
  return [masqChainName(name, id), `CNI-DN-${hash.slice(0, 21)}`];
}

async function natRules(): Promise<string> {
  return (await runChecked('iptables-save', ['-t', 'nat'])).stdout;
}

/** Removes every nat rule and chain left for the given ids (only after a failure should there be any). */
async function removeLeftoverRules(): Promise<void> {
  const ids = [...attachedIds.entries()].flatMap(([name, set]) => [...set].map((id) => ({ name, id })));
  const chains = new Set(ids.flatMap(({ name, id }) => chainsFor(name, id)));
  const idList = ids.map(({ id }) => id);
  for (const table of ['nat', 'filter']) {
    for (const cmd of ['iptables', 'ip6tables']) {
      const listed = await run(cmd, ['-t', table, '-S']);
      for (const line of listed.stdout.split('\n')) {
        if (!line.startsWith('-A ')) continue;
        const args = splitRule(line);
        const mentions = idList.some((id) => line.includes(id)) || [...chains].some((c) => args.includes(c));
        if (mentions) await run(cmd, ['-t', table, '-D', ...args.slice(1)]);
      }
      for (const chain of chains) {
        await run(cmd, ['-t', table, '-F', chain]);
        await run(cmd, ['-t', table, '-X', chain]);
      }
    }
  }
}

after(async () => {
  for (const child of children) child.kill('SIGKILL');
  await berth?.cleanup().catch(() => undefined);
  // Netns of every test network, then bridges, rules and files.
  const bases = await readdir(dir).catch(() => [] as string[]);
  for (const base of bases) {
    for (const path of await listNetns(join(dir, base, 'run'))) {
      await run('umount', ['--lazy', path]);
    }
  }
  for (const bridge of bridges) await run('ip', ['link', 'del', bridge]);
  await removeLeftoverRules();
  await rm(dir, { recursive: true, force: true });
});

/** Runs a one-reply TCP server inside a netns; resolves once it listens. */
async function serveIn(netns: string, port: number, reply: string, host = '0.0.0.0'): Promise<ChildProcess> {
  const script = `require('node:net').createServer((s) => s.end(${JSON.stringify(reply)})).listen(${port}, ${JSON.stringify(host)}, () => console.log('listening'));`;
  const child = spawn('nsenter', [`--net=${netns}`, process.execPath, '-e', script], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  child.once('exit', () => children.delete(child));
  await new Promise<void>((resolve, reject) => {
    let err = '';
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    child.stdout!.once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`server in ${netns} exited ${code}: ${err}`)));
  });
  return child;
}

/** Reads what a TCP server at host:port sends, from the host or from inside a netns. */
async function fetchTcp(host: string, port: number, netns?: string): Promise<string> {
  if (netns) {
    const script = `const s = require('node:net').connect(${port}, ${JSON.stringify(host)}); let d = ''; s.on('data', (c) => (d += c)); s.on('end', () => process.stdout.write(d)); s.on('error', (e) => { console.error(e.message); process.exit(1); }); s.setTimeout(5000, () => { console.error('timeout'); process.exit(1); });`;
    return (
      await runChecked('nsenter', [`--net=${netns}`, process.execPath, '-e', script], { timeoutMs: 15_000 })
    ).stdout;
  }
  return new Promise((resolve, reject) => {
    const socket = connect(port, host);
    let data = '';
    socket.setTimeout(5000, () => socket.destroy(new Error(`timeout connecting to ${host}:${port}`)));
    socket.on('data', (c: Buffer) => (data += c.toString()));
    socket.on('end', () => resolve(data));
    socket.on('error', reject);
  });
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

interface AddrInfo {
  ifname: string;
  flags: string[];
  addr_info: { family: string; local: string; prefixlen: number; scope: string }[];
}

async function addrsIn(netns: string): Promise<AddrInfo[]> {
  return JSON.parse(
    (await runChecked('nsenter', [`--net=${netns}`, 'ip', '-j', 'addr', 'show'])).stdout,
  ) as AddrInfo[];
}

async function allocations(net: TestNet): Promise<string[]> {
  const names = await readdir(join(net.ipamDir, net.name)).catch(() => [] as string[]);
  return names.filter((n) => !n.startsWith('last_reserved_ip') && n !== 'lock');
}

async function vethsOn(bridge: string): Promise<number> {
  const out = await run('ip', ['-o', 'link', 'show', 'master', bridge]);
  return out.stdout.trim() ? out.stdout.trim().split('\n').length : 0;
}

let main: TestNet;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'berth-net-'));
  main = await makeNet(0);
});

test('ADD gives eth0 an IPv4 and an IPv6 address inside the netns, lo up, default route; CHECK passes', async () => {
  const p = pod(main, 'a');
  const netns = await main.network.createNetns(p.id);
  const status = await main.network.attach(p, netns, []);
  assert.equal(status.networkName, main.name);
  assert.equal(status.ips.length, 2);
  assert.match(status.ips[0]!, new RegExp(`^${subnet4(0).replace(/\./g, '\\.')}\\.\\d+$`));
  assert.ok(status.ips[1]!.startsWith(subnet6(0)), status.ips[1]);
  const addrs = await addrsIn(netns);
  const eth0 = addrs.find((a) => a.ifname === 'eth0')!;
  assert.deepEqual(
    eth0.addr_info.filter((a) => a.scope === 'global').map((a) => a.local),
    status.ips,
  );
  const lo = addrs.find((a) => a.ifname === 'lo')!;
  assert.ok(lo.flags.includes('UP'), 'berth runs the loopback plugin beside the chain');
  const routes = (await runChecked('nsenter', [`--net=${netns}`, 'ip', 'route', 'show', 'default'])).stdout;
  assert.match(routes, new RegExp(`default via ${subnet4(0).replace(/\./g, '\\.')}\\.1 dev eth0`));
  assert.deepEqual((await allocations(main)).sort(), [...status.ips].sort());
  await main.network.check(p, netns);
  assert.deepEqual(await main.network.ready(), { ok: true });
});

test('two pods reach each other across the bridge (IPv4 and IPv6)', async () => {
  const a = pod(main, 'a');
  const netnsA = join(main.runRoot, 'netns', a.id);
  const ipsA = (await addrsIn(netnsA))
    .find((x) => x.ifname === 'eth0')!
    .addr_info.filter((x) => x.scope === 'global');
  const b = pod(main, 'b');
  const netnsB = await main.network.createNetns(b.id);
  await main.network.attach(b, netnsB, []);
  const server = await serveIn(netnsA, 8080, 'hello from a', '::');
  try {
    assert.equal(await fetchTcp(ipsA[0]!.local, 8080, netnsB), 'hello from a');
    assert.equal(await fetchTcp(ipsA[1]!.local, 8080, netnsB), 'hello from a');
  } finally {
    server.kill('SIGKILL');
  }
});

test('hostPort is reachable on 127.0.0.1 and on the pod IP from the host (portmap)', async () => {
  const c = pod(main, 'c');
  const hostPort = await freePort();
  const mappings: HostPortMapping[] = [{ protocol: 'tcp', containerPort: 8081, hostPort, hostIP: '' }];
  const netns = await main.network.createNetns(c.id);
  const status = await main.network.attach(c, netns, mappings);
  const server = await serveIn(netns, 8081, 'hello from c');
  try {
    assert.equal(await fetchTcp('127.0.0.1', hostPort), 'hello from c');
    assert.equal(await fetchTcp(status.ips[0]!, 8081), 'hello from c');
    // portmap's snat for localhost needs route_localnet on the bridge.
    assert.equal(
      (await readFile(`/proc/sys/net/ipv4/conf/${main.bridge}/route_localnet`, 'utf8')).trim(),
      '1',
    );
    assert.match(
      await natRules(),
      new RegExp(
        `--dport ${hostPort} .*-j DNAT --to-destination ${status.ips[0]!.replace(/\./g, '\\.')}:8081`,
      ),
    );
  } finally {
    server.kill('SIGKILL');
  }
});

test('DEL removes the veth, iptables rules and the IP allocation; it is idempotent', async () => {
  const c = pod(main, 'c');
  const netns = join(main.runRoot, 'netns', c.id);
  const before = await vethsOn(main.bridge);
  const ips = (await addrsIn(netns))
    .find((x) => x.ifname === 'eth0')!
    .addr_info.filter((x) => x.scope === 'global');
  await main.network.detach(c, netns, [], undefined);
  const rules = await natRules();
  assert.ok(!rules.includes(c.id), 'no nat rule mentions the pod');
  for (const chain of chainsFor(main.name, c.id)) assert.ok(!rules.includes(chain), `${chain} is gone`);
  for (const ip of ips) assert.ok(!(await allocations(main)).includes(ip.local), `${ip.local} released`);
  assert.equal(await vethsOn(main.bridge), before - 1);
  assert.deepEqual(
    (await addrsIn(netns)).map((a) => a.ifname),
    ['lo'],
  );
  // The attachment record (port mappings for DEL) is gone too.
  await assert.rejects(readFile(join(main.runRoot, 'cni-attachments', `${c.id}.json`)), /ENOENT/);
  await main.network.detach(c, netns, [], undefined);
  await main.network.removeNetns(netns);
  await main.network.removeNetns(netns);
  await main.network.detach(c, netns, [], undefined);
});

test('DEL after the netns is gone still releases the IP and rules (port mappings from the record)', async () => {
  const d = pod(main, 'd');
  const hostPort = await freePort();
  const netns = await main.network.createNetns(d.id);
  const status = await main.network.attach(d, netns, [
    { protocol: 'tcp', containerPort: 80, hostPort, hostIP: '127.0.0.1' },
  ]);
  assert.ok((await natRules()).includes(d.id));
  await main.network.removeNetns(netns);
  // Port mappings are not passed again: berth recorded them at ADD.
  await main.network.detach(d, netns, [], undefined);
  assert.ok(!(await natRules()).includes(d.id));
  const left = await allocations(main);
  for (const ip of status.ips) assert.ok(!left.includes(ip), `${ip} released`);
  await main.network.detach(d, undefined, [], undefined);
});

test('concurrent ADDs get distinct IPs; concurrent DELs release them all', async () => {
  const pods = Array.from({ length: 6 }, (_, i) => pod(main, `conc${i}`));
  const results = await Promise.all(
    pods.map(async (p) => {
      const netns = await main.network.createNetns(p.id);
      return { netns, status: await main.network.attach(p, netns, []) };
    }),
  );
  const v4 = results.map((r) => r.status.ips[0]);
  assert.equal(new Set(v4).size, pods.length, `distinct IPs: ${v4.join(', ')}`);
  for (const r of results) {
    const eth0 = (await addrsIn(r.netns)).find((a) => a.ifname === 'eth0')!;
    assert.ok(eth0.addr_info.some((a) => a.local === r.status.ips[0]));
  }
  await Promise.all(
    pods.map(async (p, i) => {
      await main.network.detach(p, results[i]!.netns, [], results[i]!.status.result);
      await main.network.removeNetns(results[i]!.netns);
    }),
  );
  const left = await allocations(main);
  for (const ip of v4) assert.ok(!left.includes(ip!), `${ip} released`);
});

test('ADDs of different pods at once, while the bridge does not exist yet: all attached, distinct IPs', async () => {
  const net = await makeNet(6);
  const pods = Array.from({ length: 6 }, (_, i) => pod(net, `fresh${i}`));
  const netnses = await Promise.all(pods.map((p) => net.network.createNetns(p.id)));
  const results = await Promise.all(pods.map((p, i) => net.network.attach(p, netnses[i]!, [])));
  const v4 = results.map((r) => r.ips[0]);
  assert.equal(new Set(v4).size, pods.length, `distinct IPs: ${v4.join(', ')}`);
  for (const [i, r] of results.entries()) {
    const eth0 = (await addrsIn(netnses[i]!)).find((a) => a.ifname === 'eth0')!;
    assert.ok(eth0.addr_info.some((a) => a.local === r.ips[0]));
  }
  assert.equal(await vethsOn(net.bridge), pods.length);
  await Promise.all(
    pods.map(async (p, i) => {
      await net.network.detach(p, netnses[i]!, [], results[i]!.result);
      await net.network.removeNetns(netnses[i]!);
    }),
  );
  assert.deepEqual(await allocations(net), []);
  assert.equal(await vethsOn(net.bridge), 0);
});

test('a failing plugin in the chain: error names it and its message; nothing stays attached', async () => {
  const net = await makeNet(1, (conf) => {
    conf.plugins.splice(1, 0, { type: 'tuning', sysctl: { 'net.ipv4.conf.eth0.no_such_sysctl': '1' } });
  });
  const p = pod(net, 'broken');
  const netns = await net.network.createNetns(p.id);
  await assert.rejects(
    net.network.attach(p, netns, [
      { protocol: 'tcp', containerPort: 80, hostPort: await freePort(), hostIP: '' },
    ]),
    (err: Error) => {
      assert.match(
        err.message,
        /CNI plugin "tuning" \(\/usr\/lib\/cni\/tuning\) ADD for network "berth-t.*" failed/,
      );
      assert.match(err.message, /no_such_sysctl/);
      return true;
    },
  );
  assert.deepEqual(
    (await addrsIn(netns)).map((a) => a.ifname),
    ['lo'],
    'eth0 was removed again',
  );
  assert.deepEqual(await allocations(net), [], 'the IP was released');
  assert.equal(await vethsOn(net.bridge), 0);
  assert.ok(!(await natRules()).includes(p.id));
  await assert.rejects(readFile(join(net.runRoot, 'cni-attachments', `${p.id}.json`)), /ENOENT/);
  await net.network.detach(p, netns, [], undefined);
  await net.network.removeNetns(netns);
});

test('a missing plugin: NetworkReady false naming it, ADD refused before anything runs', async () => {
  const net = await makeNet(2, (conf) => {
    conf.plugins.push({ type: 'no-such-plugin' });
  });
  const ready = await net.network.ready();
  assert.equal(ready.ok, false);
  assert.match(
    !ready.ok ? ready.message : '',
    /CNI plugin "no-such-plugin" not found in \/usr\/lib\/cni, \/opt\/cni\/bin/,
  );
  const p = pod(net, 'missing');
  const netns = await net.network.createNetns(p.id);
  await assert.rejects(net.network.attach(p, netns, []), /CNI plugin "no-such-plugin" not found/);
  assert.deepEqual(await allocations(net), []);
  await net.network.removeNetns(netns);
});

test('a chain with its own loopback plugin: lo up, no second loopback run needed', async () => {
  const net = await makeNet(7, (conf) => conf.plugins.push({ type: 'loopback' }));
  const p = pod(net, 'own-lo');
  const netns = await net.network.createNetns(p.id);
  const status = await net.network.attach(p, netns, []);
  assert.equal(status.ips.length, 2);
  const lo = (await addrsIn(netns)).find((a) => a.ifname === 'lo')!;
  assert.ok(lo.flags.includes('UP'));
  await net.network.detach(p, netns, [], undefined);
  assert.deepEqual(await allocations(net), []);
  await net.network.removeNetns(netns);
});

test('no loopback plugin installed: NetworkReady false naming it; ADD refused before anything runs', async () => {
  // The chain's plugins without `loopback`, which berth runs beside every chain.
  const bin = join(dir, 'bin-no-loopback');
  await mkdir(bin, { recursive: true });
  for (const plugin of ['bridge', 'host-local', 'portmap'])
    await symlink(`/usr/lib/cni/${plugin}`, join(bin, plugin));
  const net = await makeNet(8);
  const config = {
    run_root: net.runRoot,
    network: { cni_conf_dir: net.confDir, cni_bin_dirs: [bin], network_name: '' },
  };
  const network = createPodNetwork(() => config as unknown as BerthConfig, silentLogger);
  const ready = await network.ready();
  assert.equal(ready.ok, false);
  assert.match(!ready.ok ? ready.message : '', /CNI plugin "loopback" not found in /);
  const p = pod(net, 'no-lo');
  const netns = await network.createNetns(p.id);
  await assert.rejects(network.attach(p, netns, []), /CNI plugin "loopback" not found/);
  assert.deepEqual(await allocations(net), []);
  assert.equal(await vethsOn(net.bridge), 0);
  await assert.rejects(readFile(join(net.runRoot, 'cni-attachments', `${p.id}.json`)), /ENOENT/);
  await network.removeNetns(netns);
});

test('bad pod identities and port mappings are refused before any plugin runs', async () => {
  const p = pod(main, 'bad');
  const netns = await main.network.createNetns(p.id);
  try {
    await assert.rejects(
      main.network.attach({ ...p, name: 'a;K8S_POD_UID=evil' }, netns, []),
      (err: Error & { code?: number }) => {
        assert.equal(err.code, 3);
        assert.match(err.message, /name "a;K8S_POD_UID=evil" contains ';', '='/);
        return true;
      },
    );
    await assert.rejects(
      main.network.attach(p, netns, [{ protocol: 'tcp', containerPort: 0, hostPort: 70000, hostIP: '' }]),
      /port mapping 70000->0\/tcp has a port outside 1-65535/,
    );
    await assert.rejects(
      main.network.detach({ ...p, id: '../escape' }, undefined, [], undefined),
      /not a valid netns name/,
    );
    await assert.rejects(main.network.attach(p, join(dir, 'not-a-netns'), []), /is not a network namespace/);
    assert.deepEqual(
      (await addrsIn(netns)).map((a) => a.ifname),
      ['lo'],
    );
  } finally {
    await main.network.removeNetns(netns);
  }
});

test('a hanging plugin is killed at the timeout and the chain is undone', async () => {
  const hang = join(dir, 'hang-bin');
  await mkdir(hang, { recursive: true });
  await writeFile(
    join(hang, 'hang'),
    `#!${process.execPath}\nif (process.env.CNI_COMMAND === 'ADD') setTimeout(() => {}, 600000);\nelse if (process.env.CNI_COMMAND === 'VERSION') process.stdout.write(JSON.stringify({ cniVersion: '1.0.0', supportedVersions: ['1.0.0'] }));\n`,
    { mode: 0o755 },
  );
  const net = await makeNet(3, (conf) => conf.plugins.splice(1, 0, { type: 'hang' }), {
    pluginTimeoutMs: 1500,
  });
  const config = {
    run_root: net.runRoot,
    network: { cni_conf_dir: net.confDir, cni_bin_dirs: [...CNI_BIN, hang], network_name: '' },
  };
  const network = createPodNetwork(() => config as unknown as BerthConfig, silentLogger, {
    pluginTimeoutMs: 1500,
  });
  const p = pod(net, 'hang');
  const netns = await network.createNetns(p.id);
  await assert.rejects(network.attach(p, netns, []), (err: Error & { code?: number }) => {
    assert.match(err.message, /CNI plugin "hang" .* ADD .* did not finish within 1500 ms and was killed/);
    assert.equal(err.code, 4);
    return true;
  });
  assert.deepEqual(await allocations(net), []);
  assert.deepEqual(
    (await addrsIn(netns)).map((a) => a.ifname),
    ['lo'],
  );
  await network.removeNetns(netns);
});

for (const [i, version] of [
  [4, '0.3.1'],
  [5, '0.4.0'],
] as const) {
  test(`a cniVersion ${version} network list works: ADD, IPs from the ${version} result, DEL`, async () => {
    const net = await makeNet(i, (conf) => (conf.cniVersion = version));
    const p = pod(net, `v${version}`);
    const netns = await net.network.createNetns(p.id);
    const status = await net.network.attach(p, netns, [
      { protocol: 'udp', containerPort: 53, hostPort: await freePort(), hostIP: '' },
    ]);
    assert.equal((status.result as { cniVersion: string }).cniVersion, version);
    assert.equal(status.ips.length, 2);
    assert.ok(status.ips[0]!.startsWith(subnet4(i) + '.'));
    await net.network.detach(p, netns, [], undefined);
    assert.deepEqual(await allocations(net), []);
    assert.ok(!(await natRules()).includes(p.id));
    await net.network.removeNetns(netns);
  });
}

test('sweepAttachments releases the network of pods no record names, and only those', async () => {
  const orphan = pod(main, 'orphan');
  const netns = await main.network.createNetns(orphan.id);
  const hostPort = await freePort();
  const status = await main.network.attach(orphan, netns, [
    { protocol: 'tcp', containerPort: 80, hostPort, hostIP: '' },
  ]);
  await writeFile(join(main.runRoot, 'cni-attachments', `${orphan.id}.json.abc.tmp`), '{');
  const known = new Set([pod(main, 'a').id, pod(main, 'b').id]);
  assert.deepEqual(await main.network.sweepAttachments(known), [orphan.id]);
  assert.ok(!(await natRules()).includes(orphan.id));
  const left = await allocations(main);
  for (const ip of status.ips) assert.ok(!left.includes(ip), `${ip} released`);
  assert.deepEqual(
    (await listNetns(main.runRoot)).sort(),
    [...known].map((id) => join(main.runRoot, 'netns', id)).sort(),
  );
  // The known pods keep their network.
  assert.deepEqual(
    (await readdir(join(main.runRoot, 'cni-attachments'))).sort(),
    [...known].map((id) => `${id}.json`).sort(),
  );
  assert.deepEqual(await main.network.sweepAttachments(known), []);
});

test('no netns and no attachment records are left behind by the tests above', async () => {
  // Pods a and b are still attached on purpose; tear them down the way StopPodSandbox would.
  for (const label of ['a', 'b']) {
    const p = pod(main, label);
    const netns = join(main.runRoot, 'netns', p.id);
    await main.network.detach(p, netns, [], undefined);
    await main.network.removeNetns(netns);
  }
  assert.deepEqual(await listNetns(main.runRoot), []);
  assert.deepEqual(await allocations(main), []);
  assert.deepEqual(await readdir(join(main.runRoot, 'cni-attachments')), []);
  const rules = await natRules();
  for (const ids of attachedIds.values())
    for (const id of ids) assert.ok(!rules.includes(id), `rules of ${id} gone`);
});

test('Status over the socket: NetworkReady follows the CNI config and its plugins', async () => {
  berth = await startBerth();
  const conditions = async () =>
    (await berth!.cri.runtime.status({ verbose: true })).status!.conditions.find(
      (c) => c.type === 'NetworkReady',
    )!;
  let network = await conditions();
  assert.equal(network.status, false);
  assert.equal(network.reason, 'NetworkPluginNotReady');
  assert.match(network.message, /no CNI network config/);
  const conf = await readFile(join(main.confDir, '10-test.conflist'), 'utf8');
  await writeFile(join(berth.dir, 'cni', '10-test.conflist'), conf);
  network = await conditions();
  assert.equal(network.status, true, network.message);
  const status = await berth.cri.runtime.status({ verbose: true });
  assert.equal(JSON.parse(status.info.network!).name, main.name);
  await writeFile(
    join(berth.dir, 'cni', '05-missing.conflist'),
    JSON.stringify({ cniVersion: '1.0.0', name: 'missing', plugins: [{ type: 'not-installed' }] }),
  );
  network = await conditions();
  assert.equal(network.status, false);
  assert.match(network.message, /CNI plugin "not-installed" not found/);
});
