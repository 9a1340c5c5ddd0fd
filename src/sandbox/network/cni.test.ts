import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CniNetworkList } from '../cni-config.js';
import {
  addNetworkList,
  checkVersions,
  compareVersions,
  delNetworkList,
  execPlugin,
  findPlugin,
  pluginConfig,
  resultIps,
  type CniInvocation,
} from './cni.js';

let bin: string;
const inv: CniInvocation = {
  containerId: 'c1',
  netns: '/nonexistent',
  ifName: 'eth0',
  args: [
    ['IgnoreUnknown', '1'],
    ['K8S_POD_NAME', 'p'],
  ],
  capabilityArgs: { portMappings: [{ hostPort: 80, containerPort: 8080, protocol: 'tcp', hostIP: '' }] },
};

/** A fake plugin (a node script) that logs its env and stdin and answers as told. */
async function plugin(name: string, body: string): Promise<void> {
  const path = join(bin, name);
  await writeFile(
    path,
    `#!${process.execPath}
const fs = require('node:fs');
const stdin = fs.readFileSync(0, 'utf8');
fs.appendFileSync(${JSON.stringify(join(bin, 'calls.log'))}, JSON.stringify({ name: ${JSON.stringify(name)}, env: Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith('CNI_'))), conf: stdin ? JSON.parse(stdin) : null }) + '\\n');
${body}
`,
  );
  await chmod(path, 0o755);
}

async function calls(): Promise<
  { name: string; env: Record<string, string>; conf: Record<string, unknown> }[]
> {
  try {
    const text = await readFile(join(bin, 'calls.log'), 'utf8');
    await rm(join(bin, 'calls.log'));
    return text
      .trim()
      .split('\n')
      .map(
        (l) => JSON.parse(l) as { name: string; env: Record<string, string>; conf: Record<string, unknown> },
      );
  } catch {
    return [];
  }
}

const list = (plugins: Record<string, unknown>[], cniVersion = '1.0.0'): CniNetworkList => ({
  cniVersion,
  name: 'fake',
  plugins,
  file: '/fake.conflist',
  raw: {},
});

before(async () => {
  bin = await mkdtemp(join(tmpdir(), 'berth-cni-unit-'));
  const versions = `if (process.env.CNI_COMMAND === 'VERSION') { process.stdout.write(JSON.stringify({ cniVersion: '1.0.0', supportedVersions: ['0.3.1', '0.4.0', '1.0.0'] })); process.exit(0); }`;
  await plugin(
    'good',
    `${versions}
if (process.env.CNI_COMMAND === 'ADD') {
  const conf = JSON.parse(stdin);
  const prev = conf.prevResult ?? { cniVersion: conf.cniVersion, interfaces: [{ name: 'eth0', sandbox: process.env.CNI_NETNS }], ips: [{ address: '10.9.0.2/24', interface: 0 }] };
  process.stdout.write(JSON.stringify(prev));
}`,
  );
  await plugin(
    'failing',
    `${versions}
if (process.env.CNI_COMMAND === 'ADD') {
  process.stderr.write('iptables: chain exploded\\n');
  process.stdout.write(JSON.stringify({ cniVersion: '1.0.0', code: 11, msg: 'failed to set up port map', details: 'rule 3' }));
  process.exit(1);
}`,
  );
  await plugin('garbage', `${versions}\nprocess.stdout.write('this is not json');`);
  await plugin('slow', `${versions}\nsetTimeout(() => {}, 60000);`);
  await plugin(
    'old',
    `process.stdout.write(JSON.stringify({ cniVersion: '0.4.0', supportedVersions: ['0.3.0', '0.3.1', '0.4.0'] }));`,
  );
  await writeFile(join(bin, 'notexec'), 'x');
});
after(async () => {
  await rm(bin, { recursive: true, force: true });
});

test('compareVersions orders dotted versions numerically', () => {
  assert.ok(compareVersions('0.4.0', '0.3.1') > 0);
  assert.ok(compareVersions('1.0.0', '0.10.0') > 0);
  assert.equal(compareVersions('1.0', '1.0.0'), 0);
});

test('pluginConfig adds name, cniVersion, prevResult and only declared capabilities', () => {
  const l = list([
    { type: 'a', capabilities: { portMappings: true, bandwidth: true }, runtimeConfig: { x: 1 } },
    { type: 'b' },
  ]);
  const first = pluginConfig(l, 0, undefined, { portMappings: [1], ipRanges: [2] });
  assert.deepEqual(first, {
    type: 'a',
    capabilities: { portMappings: true, bandwidth: true },
    runtimeConfig: { x: 1, portMappings: [1] },
    name: 'fake',
    cniVersion: '1.0.0',
  });
  const second = pluginConfig(l, 1, { ips: [] }, { portMappings: [1] });
  assert.deepEqual(second, { type: 'b', name: 'fake', cniVersion: '1.0.0', prevResult: { ips: [] } });
});

test('resultIps reads 1.0.0, 0.3.1 and 0.2.0 results, sandbox interfaces only, IPv4 first', () => {
  assert.deepEqual(
    resultIps({
      cniVersion: '1.0.0',
      interfaces: [{ name: 'br0' }, { name: 'veth1' }, { name: 'eth0', sandbox: '/run/netns/x' }],
      ips: [
        { address: 'fd00::5/64', interface: 2 },
        { address: '10.0.0.1/24', interface: 0 },
        { address: '10.0.0.5/24', interface: 2 },
      ],
    }),
    ['10.0.0.5', 'fd00::5'],
  );
  assert.deepEqual(resultIps({ cniVersion: '0.3.1', ips: [{ version: '4', address: '10.1.1.1/16' }] }), [
    '10.1.1.1',
  ]);
  assert.deepEqual(
    resultIps({ cniVersion: '0.2.0', ip4: { ip: '10.2.0.3/24' }, ip6: { ip: 'fd01::3/64' } }),
    ['10.2.0.3', 'fd01::3'],
  );
  assert.deepEqual(resultIps(undefined), []);
});

test('findPlugin searches the dirs in order and names the plugin when missing', async () => {
  assert.equal(await findPlugin('good', ['/nonexistent-dir', bin]), join(bin, 'good'));
  await assert.rejects(
    findPlugin('nosuch', ['/nonexistent-dir', bin]),
    /CNI plugin "nosuch" not found in \/nonexistent-dir, /,
  );
  await assert.rejects(findPlugin('notexec', [bin]), /CNI plugin "notexec" not found/);
});

test('ADD chains prevResult and passes the CNI environment', async () => {
  await calls();
  const result = await addNetworkList(
    list([{ type: 'good' }, { type: 'good', capabilities: { portMappings: true } }]),
    inv,
    { binDirs: [bin], timeoutMs: 10_000 },
  );
  assert.deepEqual(resultIps(result), ['10.9.0.2']);
  const log = await calls();
  assert.equal(log.length, 2);
  assert.deepEqual(log[0]!.env, {
    CNI_COMMAND: 'ADD',
    CNI_CONTAINERID: 'c1',
    CNI_NETNS: '/nonexistent',
    CNI_IFNAME: 'eth0',
    CNI_PATH: bin,
    CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAME=p',
  });
  assert.equal(log[0]!.conf.prevResult, undefined);
  assert.deepEqual(log[1]!.conf.prevResult, result);
  assert.deepEqual(
    (log[1]!.conf.runtimeConfig as { portMappings: unknown }).portMappings,
    inv.capabilityArgs.portMappings,
  );
});

test('a failing plugin: error names plugin, message, details and stderr; earlier plugins are deleted in reverse', async () => {
  await calls();
  await assert.rejects(
    addNetworkList(list([{ type: 'good' }, { type: 'good' }, { type: 'failing' }]), inv, {
      binDirs: [bin],
      timeoutMs: 10_000,
    }),
    (err: Error) => {
      assert.match(
        err.message,
        /CNI plugin "failing" \(.*\/failing\) ADD for network "fake" failed \(exit 1\)/,
      );
      assert.match(err.message, /failed to set up port map \(rule 3\) \[CNI error code 11\]/);
      assert.match(err.message, /stderr: iptables: chain exploded/);
      return true;
    },
  );
  const log = await calls();
  assert.deepEqual(
    log.map((c) => `${c.name}:${c.env.CNI_COMMAND}`),
    ['good:ADD', 'good:ADD', 'failing:ADD', 'failing:DEL', 'good:DEL', 'good:DEL'],
  );
  // DEL (1.0.0) carries the last good result as prevResult.
  assert.ok(log[3]!.conf.prevResult);
});

test('a plugin printing garbage or hanging is reported, the hanging one killed', async () => {
  await assert.rejects(
    execPlugin('garbage', join(bin, 'garbage'), 'ADD', { name: 'fake', cniVersion: '1.0.0' }, inv, {
      binDirs: [bin],
      timeoutMs: 10_000,
    }),
    /CNI plugin "garbage" .* printed a result that is not JSON: this is not json/,
  );
  const started = Date.now();
  await assert.rejects(
    execPlugin('slow', join(bin, 'slow'), 'ADD', { name: 'fake', cniVersion: '1.0.0' }, inv, {
      binDirs: [bin],
      timeoutMs: 300,
    }),
    (err: Error & { code?: number }) => {
      assert.match(err.message, /CNI plugin "slow" .* did not finish within 300 ms and was killed/);
      assert.equal(err.code, 4); // DEADLINE_EXCEEDED
      return true;
    },
  );
  assert.ok(Date.now() - started < 5000);
});

test('version negotiation refuses a cniVersion a plugin does not speak', async () => {
  await checkVersions(list([{ type: 'good' }, { type: 'old' }], '0.4.0'), {
    binDirs: [bin],
    timeoutMs: 10_000,
  });
  await assert.rejects(
    checkVersions(list([{ type: 'good' }, { type: 'old' }], '1.0.0'), { binDirs: [bin], timeoutMs: 10_000 }),
    /CNI plugin "old" .* does not support cniVersion 1\.0\.0 \(it supports 0\.3\.0, 0\.3\.1, 0\.4\.0\)/,
  );
  await assert.rejects(
    checkVersions(list([{ type: 'good' }], '2.0.0'), { binDirs: [bin], timeoutMs: 10_000 }),
    /newer than berth supports/,
  );
  await assert.rejects(
    checkVersions(list([{ type: 'good' }, { type: 'good' }], '0.2.0'), { binDirs: [bin], timeoutMs: 10_000 }),
    /does not allow plugin chains/,
  );
});

test('DEL before 0.4.0 sends no prevResult; DEL keeps going past a failing plugin', async () => {
  await calls();
  await delNetworkList(
    list([{ type: 'good' }, { type: 'good' }], '0.3.1'),
    inv,
    { binDirs: [bin], timeoutMs: 10_000 },
    { ips: [] },
  );
  const log = await calls();
  assert.equal(log.length, 2);
  assert.ok(log.every((c) => c.env.CNI_COMMAND === 'DEL' && c.conf.prevResult === undefined));
  await plugin(
    'faildel',
    `process.stdout.write(JSON.stringify({ code: 7, msg: 'cannot delete' })); process.exit(1);`,
  );
  await assert.rejects(
    delNetworkList(list([{ type: 'good' }, { type: 'faildel' }]), inv, { binDirs: [bin], timeoutMs: 10_000 }),
    /CNI plugin "faildel" .* DEL .*cannot delete/,
  );
  assert.deepEqual(
    (await calls()).map((c) => `${c.name}:${c.env.CNI_COMMAND}`),
    ['faildel:DEL', 'good:DEL'],
  );
});
