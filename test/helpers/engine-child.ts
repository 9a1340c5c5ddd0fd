/**
 * A stand-in for a berth process in engine tests: creates and starts one
 * container through the engine, prints its ID, then waits to be killed.
 * argv: DIR ROOTFS ID CGROUP_PARENT
 */
import { join } from 'node:path';
import { ConmonEngine } from '../../src/oci/engine.js';
import { silentLogger } from '../../src/log.js';
import { minimalSpec, runcHandler } from './oci-bundle.js';

const [dir, rootfs, id, cgroupParent] = process.argv.slice(2);
const engine = new ConmonEngine({
  conmonPath: '/usr/bin/conmon',
  runRoot: join(dir, 'run'),
  exitDir: join(dir, 'run', 'exits'),
  cgroupDriver: 'cgroupfs',
  log: silentLogger,
});
const handler = runcHandler(dir);
await engine.create({
  id,
  handler,
  bundleDir: join(dir, 'bundles', id),
  spec: minimalSpec(rootfs, ['sleep', '1000'], { cgroupsPath: `${cgroupParent}/${id}` }),
  logPath: join(dir, 'logs', `${id}.log`),
  stdin: false,
  stdinOnce: false,
  tty: false,
});
await engine.start(id, handler);
process.stdout.write(`started ${id}\n`);
setInterval(() => undefined, 1000);
