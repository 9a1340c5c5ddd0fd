/**
 * The server wrapper answers UNIMPLEMENTED, naming the RPC, for any method
 * berth registers no handler for (unary and server-streaming alike), and
 * logs/maps errors of the handlers it has.
 */
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status, type Server } from '@grpc/grpc-js';
import { connectCri, type CriClients } from '../../test/helpers/cri-client.js';
import { FailedPreconditionError, InternalError, NotFoundError } from '../errors.js';
import { silentLogger } from '../log.js';
import { bindUnix, createGrpcServer, toGrpcError } from './grpc-server.js';

let dir: string;
let server: Server;
let cri: CriClients;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'berth-grpc-'));
  server = createGrpcServer(
    {
      runtime: {
        version: async () => {
          throw new NotFoundError('nothing here: a test handler');
        },
      },
      image: {},
    },
    { log: silentLogger, maxMessageBytes: 1024 * 1024 },
  );
  await bindUnix(server, join(dir, 'test.sock'));
  cri = connectCri(join(dir, 'test.sock'));
});

after(async () => {
  cri.close();
  server.forceShutdown();
  await rm(dir, { recursive: true, force: true });
});

it('answers UNIMPLEMENTED naming a unary RPC without a handler', async () => {
  await assert.rejects(
    cri.runtime.checkpointContainer({ containerId: 'x', location: '', timeout: 0n }),
    (err: { code: number; details: string }) => {
      assert.equal(err.code, status.UNIMPLEMENTED);
      assert.match(err.details, /berth does not implement .*CheckpointContainer/);
      return true;
    },
  );
  await assert.rejects(cri.image.imageFsInfo({}), (err: { code: number; details: string }) => {
    assert.equal(err.code, status.UNIMPLEMENTED);
    assert.match(err.details, /ImageFsInfo/);
    return true;
  });
});

it('answers UNIMPLEMENTED naming a streaming RPC without a handler', async () => {
  const stream = cri.rawRuntime.getContainerEvents({});
  const err = await new Promise<{ code: number; details: string }>((resolve) =>
    stream.once('error', resolve),
  );
  assert.equal(err.code, status.UNIMPLEMENTED);
  assert.match(err.details, /GetContainerEvents/);
});

it("maps a handler's error to its status and keeps the message", async () => {
  await assert.rejects(cri.runtime.version({ version: '' }), (err: { code: number; details: string }) => {
    assert.equal(err.code, status.NOT_FOUND);
    assert.match(err.details, /nothing here: a test handler/);
    return true;
  });
});

it('a full disk or quota anywhere in the cause chain is RESOURCE_EXHAUSTED; other errors keep their code', () => {
  const full = Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
  assert.deepEqual(
    toGrpcError(new InternalError('pull of img: layer sha256:ab: write failed', { cause: full })),
    {
      code: status.RESOURCE_EXHAUSTED,
      details: 'pull of img: layer sha256:ab: write failed',
    },
  );
  assert.equal(
    toGrpcError(Object.assign(new Error('quota'), { code: 'EDQUOT' })).code,
    status.RESOURCE_EXHAUSTED,
  );
  assert.equal(
    toGrpcError(new FailedPreconditionError('pod p: step', { cause: full })).code,
    status.RESOURCE_EXHAUSTED,
  );
  assert.equal(toGrpcError(new InternalError('x', { cause: new Error('y') })).code, status.INTERNAL);
  assert.equal(toGrpcError(new NotFoundError('image x not found', { cause: full })).code, status.NOT_FOUND);
  assert.equal(toGrpcError('a string').code, status.INTERNAL);
});
