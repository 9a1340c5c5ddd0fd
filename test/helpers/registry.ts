/**
 * Debian's `docker-registry` (distribution 2.8) for tests, on 127.0.0.1 at a
 * random port with its storage in a temp dir, in one of three modes:
 *
 *   open      no auth
 *   htpasswd  Basic auth from an htpasswd file (`htpasswd -B`)
 *   token     Bearer tokens from a realm this helper serves: RS256 JWTs
 *             signed by a throwaway certificate the registry trusts; Basic
 *             credentials or an identity token (OAuth2 refresh token) get one
 *
 * `tls: true` puts an HTTPS front (a certificate for 127.0.0.1 from a
 * throwaway CA, `caFile`) before the registry.
 *
 * Optionally a transparent front (`gate: true`) relays every request and can
 * hold a blob after some bytes (`stallBlob`) to stage stalls and crashes
 * mid-download. `requests()` parses the registry's access log.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, createPrivateKey, randomUUID, sign, X509Certificate } from 'node:crypto';
import { mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import {
  createServer,
  request as httpRequest,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runChecked } from '../../src/util/run.js';
import { selfSignedCert } from './certs.js';
import { pushToRegistry, type BuiltImage, type BuiltIndex } from './image-builder.js';

export type RegistryMode = 'open' | 'htpasswd' | 'token';

export interface RegistryOptions {
  mode?: RegistryMode;
  username?: string;
  password?: string;
  /** token mode: an identity token the realm accepts as a refresh token. */
  identityToken?: string;
  /** Start the relaying front and publish its address instead of the registry's. */
  gate?: boolean;
  /** Serve HTTPS (through the front) with a certificate for 127.0.0.1 from a throwaway CA. */
  tls?: boolean;
  /**
   * The front answers blob GETs with a 307 to a "storage" server on another
   * port (as registries backed by object storage do), which serves the blob.
   */
  redirectBlobs?: boolean;
}

export interface LoggedRequest {
  method: string;
  path: string;
  status: number;
}

export interface TestRegistry {
  /** "127.0.0.1:PORT" as references and berth config name it (the gate's when there is one). */
  host: string;
  /** "http://127.0.0.1:PORT" (https with `tls`). */
  url: string;
  /** The registry's own address, bypassing the gate. */
  directUrl: string;
  /** tls: the PEM file of the CA that signed the front's certificate. */
  caFile?: string;
  dataDir: string;
  /** Pushes with the right credentials for the mode; returns the top digest. */
  push(repository: string, tag: string, image: BuiltImage | BuiltIndex): Promise<string>;
  /** Requests the registry served so far (its access log, once it is quiet). */
  requests(): Promise<LoggedRequest[]>;
  /** Overwrites a stored blob with other bytes of the same length. */
  corruptBlob(digest: string): Promise<void>;
  /** gate: holds GETs of the blob after `afterBytes` bytes until `release()`. */
  stallBlob(digest: string, afterBytes: number): void;
  /** gate: resolves once a stalled blob has sent its bytes and is held. */
  stalled(): Promise<void>;
  /** gate: lets held and future blobs flow again. */
  release(): void;
  /** redirectBlobs: the requests the storage server got, and whether they carried credentials. */
  storageRequests(): { path: string; authorization: boolean }[];
  /** Tokens the realm issued (token mode). */
  tokensIssued(): number;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function listen(server: Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as { port: number }).port;
}

const b64url = (data: Buffer | string) => Buffer.from(data).toString('base64url');

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

export async function startRegistry(options: RegistryOptions = {}): Promise<TestRegistry> {
  const mode = options.mode ?? 'open';
  const username = options.username ?? 'berth';
  const password = options.password ?? 'secret-pw';
  const dir = await mkdtemp(join(tmpdir(), 'berth-registry-'));
  const dataDir = join(dir, 'data');
  const servers: Server[] = [];
  let child: ChildProcess | undefined;
  let issued = 0;
  try {
    const port = await freePort();
    let auth = '';
    let mint: ((scope: string) => string) | undefined;
    if (mode === 'htpasswd') {
      const line = await runChecked('/usr/bin/htpasswd', ['-Bbn', username, password]);
      await writeFile(join(dir, 'htpasswd'), line.stdout.trim() + '\n');
      auth = `auth:\n  htpasswd:\n    realm: berth-test\n    path: ${join(dir, 'htpasswd')}\n`;
    } else if (mode === 'token') {
      const signer = await selfSignedCert(dir, { commonName: 'berth-test-token', days: 2, name: 'token' });
      const key = createPrivateKey(await readFile(signer.key));
      const cert = new X509Certificate(await readFile(signer.cert));
      const service = 'berth-test-registry';
      mint = (scope: string) => {
        const access = scope
          .split(' ')
          .filter(Boolean)
          .map((s) => {
            const [type, name, actions] = s.split(':');
            return { type, name, actions: actions.split(',') };
          });
        const now = Math.floor(Date.now() / 1000);
        const header = { typ: 'JWT', alg: 'RS256', x5c: [cert.raw.toString('base64')] };
        const claims = {
          iss: 'berth-test-issuer',
          sub: username,
          aud: service,
          exp: now + 300,
          nbf: now - 10,
          iat: now,
          jti: randomUUID(),
          access,
        };
        const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
        return `${input}.${b64url(sign('sha256', Buffer.from(input), key))}`;
      };
      const realm = createServer((req, res) => {
        void (async () => {
          const url = new URL(req.url ?? '/', 'http://realm');
          const body = await readBody(req);
          let ok: boolean;
          let scope = url.searchParams.getAll('scope').join(' ');
          if (req.method === 'POST') {
            const form = new URLSearchParams(body);
            ok =
              form.get('grant_type') === 'refresh_token' &&
              !!options.identityToken &&
              form.get('refresh_token') === options.identityToken;
            scope = form.get('scope') ?? '';
          } else {
            const basic = /^Basic (.+)$/.exec(req.headers.authorization ?? '');
            ok = !!basic && Buffer.from(basic[1], 'base64').toString() === `${username}:${password}`;
          }
          if (!ok) {
            res.writeHead(401, { 'content-type': 'application/json' }).end('{"details":"bad credentials"}');
            return;
          }
          issued++;
          const token = mint!(scope);
          res
            .writeHead(200, { 'content-type': 'application/json' })
            .end(
              JSON.stringify(
                req.method === 'POST' ? { access_token: token, expires_in: 300 } : { token, expires_in: 300 },
              ),
            );
        })();
      });
      servers.push(realm);
      const realmPort = await listen(realm);
      auth = `auth:\n  token:\n    realm: http://127.0.0.1:${realmPort}/token\n    service: ${service}\n    issuer: berth-test-issuer\n    rootcertbundle: ${signer.cert}\n`;
    }
    await writeFile(
      join(dir, 'config.yml'),
      `version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: ${dataDir}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:${port}\n${auth}`,
    );
    let output = '';
    child = spawn('/usr/bin/docker-registry', ['serve', join(dir, 'config.yml')], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout!.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
    const exited = new Promise<void>((resolve) => child!.once('exit', () => resolve()));
    const directUrl = `http://127.0.0.1:${port}`;
    const deadline = Date.now() + 20_000;
    for (;;) {
      const status = await fetch(`${directUrl}/v2/`).then(
        (r) => r.status,
        () => 0,
      );
      if (status === 200 || status === 401) break;
      if (Date.now() > deadline || child.exitCode !== null) {
        throw new Error(`docker-registry did not start:\n${output}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }

    const stalls = new Map<string, number>();
    let held: (() => void)[] = [];
    let onStalled: (() => void)[] = [];
    let stalledOnce = false;
    let gateUrl: string | undefined;
    let tlsOptions: { key: Buffer; cert: Buffer } | undefined;
    if (options.tls) {
      const openssl = (...args: string[]) => runChecked('/usr/bin/openssl', args);
      await openssl(
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-days',
        '2',
        '-subj',
        '/CN=berth-test-ca',
        '-keyout',
        join(dir, 'ca.key'),
        '-out',
        join(dir, 'ca.crt'),
        '-addext',
        'basicConstraints=critical,CA:TRUE',
        '-addext',
        'keyUsage=critical,keyCertSign,cRLSign',
      );
      await openssl(
        'req',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-subj',
        '/CN=127.0.0.1',
        '-keyout',
        join(dir, 'server.key'),
        '-out',
        join(dir, 'server.csr'),
      );
      await writeFile(join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
      await openssl(
        'x509',
        '-req',
        '-in',
        join(dir, 'server.csr'),
        '-CA',
        join(dir, 'ca.crt'),
        '-CAkey',
        join(dir, 'ca.key'),
        '-CAcreateserial',
        '-days',
        '2',
        '-out',
        join(dir, 'server.crt'),
        '-extfile',
        join(dir, 'server.ext'),
      );
      tlsOptions = {
        key: await readFile(join(dir, 'server.key')),
        cert: await readFile(join(dir, 'server.crt')),
      };
    }
    const storageLog: { path: string; authorization: boolean }[] = [];
    let storageUrl: string | undefined;
    if (options.redirectBlobs) {
      const storage = createServer((req, res) => {
        storageLog.push({ path: req.url ?? '', authorization: req.headers.authorization !== undefined });
        const m = /^\/storage\/(.+)\/(sha256:[a-f0-9]{64})$/.exec(req.url ?? '');
        if (!m) {
          res.writeHead(404).end();
          return;
        }
        const upstream = httpRequest(
          { host: '127.0.0.1', port, method: 'GET', path: `/v2/${m[1]}/blobs/${m[2]}` },
          (up) => {
            res.writeHead(up.statusCode ?? 502, { 'content-length': up.headers['content-length'] ?? '' });
            up.pipe(res);
          },
        );
        upstream.on('error', () => res.destroy());
        upstream.end();
      });
      servers.push(storage);
      storageUrl = `http://127.0.0.1:${await listen(storage)}`;
    }
    if (options.gate || options.tls || options.redirectBlobs) {
      const handler = (req: IncomingMessage, res: ServerResponse) => {
        const blob = /^\/v2\/(.+)\/blobs\/(sha256:[a-f0-9]{64})$/.exec(req.url ?? '');
        if (storageUrl && blob && req.method === 'GET') {
          res.writeHead(307, { location: `${storageUrl}/storage/${blob[1]}/${blob[2]}` }).end();
          return;
        }
        const upstream = httpRequest(
          { host: '127.0.0.1', port, method: req.method, path: req.url, headers: req.headers },
          (up) => {
            res.writeHead(up.statusCode ?? 502, up.headers);
            const m = /\/blobs\/(sha256:[a-f0-9]{64})$/.exec(req.url ?? '');
            const limit = m && req.method === 'GET' ? stalls.get(m[1]) : undefined;
            if (limit === undefined) {
              up.pipe(res);
              return;
            }
            let sent = 0;
            up.on('data', (chunk: Buffer) => {
              if (!stalls.has(m![1])) {
                res.write(chunk);
                return;
              }
              const room = Math.max(0, limit - sent);
              if (room > 0) res.write(chunk.subarray(0, room));
              sent += chunk.length;
              if (chunk.length > room) {
                up.pause();
                const rest = chunk.subarray(room);
                held.push(() => {
                  res.write(rest);
                  up.resume();
                });
                if (!stalledOnce) {
                  stalledOnce = true;
                  for (const f of onStalled) f();
                  onStalled = [];
                }
              }
            });
            up.on('end', () => res.end());
          },
        );
        upstream.on('error', () => res.destroy());
        res.on('close', () => upstream.destroy());
        req.pipe(upstream);
      };
      const gate = tlsOptions ? createHttpsServer(tlsOptions, handler) : createServer(handler);
      servers.push(gate);
      gateUrl = `${tlsOptions ? 'https' : 'http'}://127.0.0.1:${await listen(gate)}`;
    }
    const url = gateUrl ?? directUrl;

    const pushAuth = (repository: string): string | undefined => {
      if (mode === 'htpasswd') return `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}`;
      if (mode === 'token') return `Bearer ${mint!(`repository:${repository}:pull,push`)}`;
      return undefined;
    };
    const blobPath = (digest: string) => {
      const hex = digest.slice('sha256:'.length);
      return join(dataDir, 'docker', 'registry', 'v2', 'blobs', 'sha256', hex.slice(0, 2), hex, 'data');
    };
    return {
      host: url.replace(/^https?:\/\//, ''),
      ...(options.tls ? { caFile: join(dir, 'ca.crt') } : {}),
      url,
      directUrl,
      dataDir,
      push: (repository, tag, image) =>
        pushToRegistry(directUrl, repository, tag, image, { authorization: pushAuth(repository) }),
      async requests() {
        // The access log line of a request comes after its response: wait until the log is quiet.
        for (let last = output.length, quiet = 0, waited = 0; quiet < 150 && waited < 3000; waited += 25) {
          await new Promise((r) => setTimeout(r, 25));
          quiet = output.length === last ? quiet + 25 : 0;
          last = output.length;
        }
        const out: LoggedRequest[] = [];
        for (const m of output.matchAll(/"(GET|HEAD|POST|PUT|PATCH|DELETE) (\S+) HTTP\/[\d.]+" (\d{3})/g)) {
          out.push({ method: m[1], path: m[2], status: Number(m[3]) });
        }
        return out;
      },
      async corruptBlob(digest) {
        const handle = await open(blobPath(digest), 'r+');
        try {
          const { size } = await handle.stat();
          const at = Math.floor(size / 2);
          const byte = Buffer.alloc(1);
          await handle.read(byte, 0, 1, at);
          byte[0] ^= 0xff;
          await handle.write(byte, 0, 1, at);
        } finally {
          await handle.close();
        }
        const data = await readFile(blobPath(digest));
        if (`sha256:${createHash('sha256').update(data).digest('hex')}` === digest)
          throw new Error('corruption failed');
      },
      stallBlob(digest, afterBytes) {
        if (!options.gate) throw new Error('stallBlob needs { gate: true }');
        stalls.set(digest, afterBytes);
        stalledOnce = false;
      },
      stalled: () =>
        stalledOnce ? Promise.resolve() : new Promise<void>((resolve) => onStalled.push(resolve)),
      release() {
        stalls.clear();
        const h = held;
        held = [];
        for (const f of h) f();
      },
      storageRequests: () => [...storageLog],
      tokensIssued: () => issued,
      async stop() {
        for (const f of held) f();
        held = [];
        for (const s of servers) {
          s.closeAllConnections();
          await new Promise((r) => s.close(r));
        }
        if (child && child.exitCode === null) {
          child.kill('SIGTERM');
          const timer = setTimeout(() => child!.kill('SIGKILL'), 5000);
          await exited;
          clearTimeout(timer);
        }
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    if (child && child.exitCode === null) child.kill('SIGKILL');
    for (const s of servers) s.close();
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}
