import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, writeFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'smol-toml';
import { loadConfig, reloadableChanges, ConfigError } from './load.js';
import { renderConfig } from './render.js';

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'berth-config-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('a named config file that is missing is an error', async () => {
  await withDir(async (dir) => {
    await assert.rejects(loadConfig({ file: join(dir, 'berth.toml') }), (err: Error) => {
      assert.ok(err instanceof ConfigError);
      assert.match(err.message, /berth\.toml: cannot read/);
      return true;
    });
  });
});

test('drop-ins apply in lexical order after the main file; flags win last', async () => {
  await withDir(async (dir) => {
    const file = join(dir, 'berth.toml');
    await writeFile(file, 'log_level = "warn"\n[server]\nsocket = "/a.sock"\n');
    await mkdir(`${file}.d`);
    await writeFile(join(`${file}.d`, '20-b.toml'), '[server]\nsocket = "/b.sock"\n');
    await writeFile(
      join(`${file}.d`, '10-a.toml'),
      '[server]\nsocket = "/ignored.sock"\nmax_message_bytes = 8192\n',
    );
    await writeFile(join(`${file}.d`, 'README'), 'not toml, ignored');
    const { config, files } = await loadConfig({ file, flags: { log_level: 'debug' } });
    assert.equal(config.server.socket, '/b.sock');
    assert.equal(config.server.max_message_bytes, 8192);
    assert.equal(config.log_level, 'debug');
    assert.deepEqual(files, [file, join(`${file}.d`, '10-a.toml'), join(`${file}.d`, '20-b.toml')]);
  });
});

test('unknown keys and wrong types name the file, the key and the expected type', async () => {
  await withDir(async (dir) => {
    const file = join(dir, 'berth.toml');
    await writeFile(file, '[server]\nsockett = "/x"\n');
    await assert.rejects(loadConfig({ file }), (err: Error) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(err.message, `${file}: unknown key "server.sockett"`);
      return true;
    });
    await writeFile(file, '[server]\nmax_message_bytes = "big"\n');
    await assert.rejects(
      loadConfig({ file }),
      /berth\.toml: key "server\.max_message_bytes" must be an integer, got string/,
    );
    await writeFile(file, 'log_level = "loud"\n');
    await assert.rejects(loadConfig({ file }), /key "log_level" must be one of trace, debug/);
    await writeFile(file, '[runtime.handlers.kata]\nroot = "/x"\n');
    await assert.rejects(loadConfig({ file }), /runtime handler "kata": key "path" is required/);
    await writeFile(file, 'this is not toml');
    await assert.rejects(loadConfig({ file }), /invalid TOML/);
  });
});

test('handlers and registries are tables of named tables with derived defaults', async () => {
  await withDir(async (dir) => {
    const file = join(dir, 'berth.toml');
    await writeFile(
      file,
      [
        'run_root = "/run/x"',
        '[runtime.handlers.runsc]',
        'path = "/usr/bin/runsc"',
        '[image.registries."registry.k8s.io"]',
        'mirrors = ["127.0.0.1:5000"]',
        'mirror_only = true',
      ].join('\n'),
    );
    const { config } = await loadConfig({ file });
    assert.equal(config.runtime.handlers.runc.path, '/usr/sbin/runc');
    assert.equal(config.runtime.handlers.runsc.root, '/run/x/runtimes/runsc');
    assert.equal(config.runtime.handlers.runsc.type, 'oci');
    assert.deepEqual(config.image.registries['registry.k8s.io'], {
      mirrors: ['127.0.0.1:5000'],
      mirror_only: true,
      insecure: false,
      ca_file: '',
    });
    assert.equal(config.runtime.container_exit_dir, '/run/x/exits');
  });
});

test('flags: dotted keys, typed, arrays by comma or repetition; unknown flags refused', async () => {
  await withDir(async (dir) => {
    const file = join(dir, 'berth.toml');
    await writeFile(file, '');
    const { config } = await loadConfig({
      file,
      flags: {
        'server.max_message_bytes': '65536',
        'image.unqualified_search_registries': ['quay.io,docker.io', 'gcr.io'],
        'runtime.handlers.kata.path': '/usr/bin/kata-runtime',
        'image.registries."gcr.io".insecure': true,
        'image.registries."gcr.io".mirrors': '127.0.0.1:5000',
      },
    });
    assert.equal(config.image.registries['gcr.io'].insecure, true);
    assert.deepEqual(config.image.registries['gcr.io'].mirrors, ['127.0.0.1:5000']);
    assert.equal(config.server.max_message_bytes, 65536);
    assert.deepEqual(config.image.unqualified_search_registries, ['quay.io', 'docker.io', 'gcr.io']);
    assert.equal(config.runtime.handlers.kata.path, '/usr/bin/kata-runtime');
    await assert.rejects(loadConfig({ file, flags: { 'server.nope': 'x' } }), /unknown flag --server\.nope/);
    await assert.rejects(
      loadConfig({ file, flags: { 'server.max_message_bytes': 'lots' } }),
      /--server\.max_message_bytes must be an integer/,
    );
  });
});

test('the rendered config is commented TOML that loads back to the same config', async () => {
  await withDir(async (dir) => {
    const file = join(dir, 'berth.toml');
    await writeFile(
      file,
      '[image.registries."127.0.0.1:5000"]\ninsecure = true\n[runtime.handlers.runsc]\npath = "/usr/bin/runsc"\n',
    );
    const { config } = await loadConfig({ file });
    const text = renderConfig(config);
    assert.match(text, /# Unix socket kubelet and crictl connect to\.\nsocket = "\/run\/berth\/berth\.sock"/);
    assert.doesNotThrow(() => parse(text));
    const again = join(dir, 'again.toml');
    await writeFile(again, text);
    const reloaded = await loadConfig({ file: again, dropInDir: join(dir, 'none') });
    assert.deepEqual(reloaded.config, config);
  });
});

test('reloadableChanges lists only reloadable keys that changed', async () => {
  await withDir(async (dir) => {
    const file = join(dir, 'berth.toml');
    await writeFile(file, '');
    const before = (await loadConfig({ file })).config;
    await writeFile(
      file,
      'log_level = "debug"\n[server]\nsocket = "/elsewhere"\n[image]\npinned_images = ["x"]\n',
    );
    const after = (await loadConfig({ file })).config;
    assert.deepEqual(reloadableChanges(before, after).sort(), ['image.pinned_images', 'log_level']);
  });
});
