/**
 * Registries that trust the same CAs share one TLS context: one made from a
 * CA list parses the whole list (16-24 ms, up to ~4.5 MiB for ~260 CAs).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { startRegistry, type TestRegistry } from '../../../test/helpers/registry.js';
import { contextsMadeFromCaLists, forgetRegistryTrust, registryTlsContext } from './trust.js';

let registry: TestRegistry;

before(async () => {
  registry = await startRegistry({ tls: true });
});

after(async () => {
  await registry?.stop();
});

test('one context from the CA list for every registry without a CA of its own', () => {
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

  // SIGHUP: the stores are read again for the next context.
  forgetRegistryTrust();
  const renewed = registryTlsContext({ insecure: false });
  assert.notEqual(renewed, first);
  assert.equal(registryTlsContext({ insecure: false }), renewed);
  assert.equal(contextsMadeFromCaLists(), before + 3);
});

/** In a process of its own, whose system store (OpenSSL's SSL_CERT_FILE) may know the registry's CA. */
const CHILD = `
import { registryTlsContext } from ${JSON.stringify(new URL('./trust.js', import.meta.url).href)};
import { undici } from ${JSON.stringify(new URL('./undici.js', import.meta.url).href)};
const { Agent, request } = await undici();
const statuses = [];
for (const insecure of [false, true]) {
  const agent = new Agent({ connect: { secureContext: registryTlsContext({ insecure }), rejectUnauthorized: !insecure } });
  try {
    const res = await request(new URL(process.env.REGISTRY_URL + '/v2/'), { dispatcher: agent, method: 'GET' });
    await res.body.dump();
    statuses.push(res.statusCode);
  } catch (err) {
    statuses.push(String(err.cause?.code ?? err.code ?? err));
  }
  await agent.close();
}
console.log(JSON.stringify(statuses));
`;

async function statusesWith(env: Record<string, string>): Promise<unknown[]> {
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '--eval', CHILD], {
    env: { ...process.env, REGISTRY_URL: registry.url, ...env },
  });
  return JSON.parse(stdout) as unknown[];
}

test('the shared context trusts the system store; the insecure one accepts any certificate', async () => {
  assert.deepEqual(await statusesWith({ SSL_CERT_FILE: registry.caFile! }), [200, 200]);
  const [verifying, insecure] = await statusesWith({});
  assert.match(String(verifying), /UNABLE_TO_VERIFY|SELF_SIGNED|UNABLE_TO_GET_ISSUER/);
  assert.equal(insecure, 200);
});
