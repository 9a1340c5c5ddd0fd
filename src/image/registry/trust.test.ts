/**
 * Registries that trust the same CAs share one TLS context: one made from a
 * CA list parses the whole list (~20 ms, ~4.5 MiB for the system's ~260). In
 * the daemon (started with --use-system-ca) the system's CAs are in Node's
 * default store and no list is parsed at all.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { startRegistry, type TestRegistry } from '../../../test/helpers/registry.js';
import { SYSTEM_CA_FLAG } from '../../cli/v8-flags.js';
import { contextsMadeFromCaLists, registryTlsContext } from './trust.js';

let registry: TestRegistry;

before(async () => {
  registry = await startRegistry({ tls: true });
});

after(async () => {
  await registry?.stop();
});

test('without the flag: one context from the CA list for every registry without a CA of its own', () => {
  const before = contextsMadeFromCaLists();
  const first = registryTlsContext({ insecure: false });
  assert.equal(registryTlsContext({ insecure: false }), first);
  assert.equal(contextsMadeFromCaLists(), before + 1);

  const withOwnCa = registryTlsContext({ insecure: false, extraCa: '' });
  assert.notEqual(withOwnCa, first, 'a registry with a ca_file gets a context of its own');
  assert.equal(contextsMadeFromCaLists(), before + 2);

  const any = registryTlsContext({ insecure: true });
  assert.equal(registryTlsContext({ insecure: true }), any);
  assert.notEqual(any, first);
  assert.equal(contextsMadeFromCaLists(), before + 2, 'insecure registries parse no CAs');
});

/** Runs in a daemon-like process: the flag, and a system store that knows the registry's CA. */
const CHILD = `
import { contextsMadeFromCaLists, registryTlsContext } from ${JSON.stringify(new URL('./trust.js', import.meta.url).href)};
import { undici } from ${JSON.stringify(new URL('./undici.js', import.meta.url).href)};
const contexts = [1, 2, 3].map(() => registryTlsContext({ insecure: false }));
const { Agent, request } = await undici();
const agent = new Agent({ connect: { secureContext: contexts[0], rejectUnauthorized: true } });
let status;
try {
  const res = await request(new URL(process.env.REGISTRY_URL + '/v2/'), { dispatcher: agent, method: 'GET' });
  await res.body.dump();
  status = res.statusCode;
} catch (err) {
  status = String(err.cause?.code ?? err.code ?? err);
}
await agent.close();
console.log(JSON.stringify({ shared: contexts.every((c) => c === contexts[0]), parsed: contextsMadeFromCaLists(), status }));
`;

async function daemonLike(
  env: Record<string, string>,
): Promise<{ shared: boolean; parsed: number; status: unknown }> {
  const { stdout } = await promisify(execFile)(
    process.execPath,
    [SYSTEM_CA_FLAG, '--input-type=module', '--eval', CHILD],
    { env: { ...process.env, REGISTRY_URL: registry.url, ...env } },
  );
  return JSON.parse(stdout) as { shared: boolean; parsed: number; status: unknown };
}

test('with the flag: the system store verifies the registry, and no CA list is parsed', async () => {
  assert.deepEqual(await daemonLike({ SSL_CERT_FILE: registry.caFile! }), {
    shared: true,
    parsed: 0,
    status: 200,
  });
  // And it is the system store that decides: without the CA there, the same connection fails.
  const refused = await daemonLike({});
  assert.equal(refused.parsed, 0);
  assert.match(String(refused.status), /UNABLE_TO_VERIFY|SELF_SIGNED|UNABLE_TO_GET_ISSUER/);
});
