/**
 * A registry's connection pool shares one TLS context: Node's tls.connect,
 * given CAs instead of a context, parses every CA again for each new
 * connection (~20 ms of the event loop with the system's ~260).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import tls from 'node:tls';
import { startRegistry, type TestRegistry } from '../../../test/helpers/registry.js';
import { Endpoints } from './hosts.js';
import { contextsMadeFromCaLists } from './trust.js';
import { undici } from './undici.js';

let registry: TestRegistry;

before(async () => {
  registry = await startRegistry({ tls: true });
});

after(async () => {
  await registry?.stop();
});

test('new HTTPS connections of one registry reuse its TLS context', async () => {
  const endpoints = new Endpoints(() => ({
    [registry.host]: { mirrors: [], mirror_only: false, insecure: false, ca_file: registry.caFile! },
  }));
  const [endpoint] = await endpoints.forRegistry(registry.host);
  const { request } = await undici();
  const original = tls.createSecureContext;
  let made = 0;
  // What tls.connect calls when a connection brings no context of its own.
  tls.createSecureContext = (...args) => {
    made++;
    return original(...args);
  };
  try {
    // At once, so the pool opens a connection for each.
    const statuses = await Promise.all(
      Array.from({ length: 4 }, async () => {
        const res = await request(new URL(`https://${registry.host}/v2/`), {
          dispatcher: endpoint.dispatcher,
          method: 'GET',
        });
        await res.body.dump();
        return res.statusCode;
      }),
    );
    assert.deepEqual(statuses, [200, 200, 200, 200]);
    assert.equal(made, 0, `${made} TLS contexts made for 4 connections`);
  } finally {
    tls.createSecureContext = original;
    await endpoints.close();
  }
});

test('registries that trust the same CAs share one context; a ca_file gets its own', async () => {
  const endpoints = new Endpoints(() => ({
    'own-ca.example': { mirrors: [], mirror_only: false, insecure: false, ca_file: registry.caFile! },
  }));
  try {
    const before = contextsMadeFromCaLists();
    for (const host of ['one.example', 'two.example', 'three.example:5000', 'own-ca.example']) {
      await endpoints.forRegistry(host);
    }
    // The shared context (unless an earlier test made it already) and the ca_file's.
    const made = contextsMadeFromCaLists() - before;
    assert.ok(made >= 1 && made <= 2, `${made} contexts parsed a CA list for 4 registries`);
  } finally {
    await endpoints.close();
  }
});
