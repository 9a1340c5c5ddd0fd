/**
 * Container Device Interface (CDI). kubelet names devices for DRA claims and
 * CDI-aware device plugins as "vendor.com/class=name" (ContainerConfig's
 * CDI_devices, or `cdi.k8s.io/*` annotations from older device plugins); spec
 * files in the CDI directories (JSON or YAML) describe what each device adds
 * to a container: environment, device nodes, mounts, hooks and extra groups.
 * A device that no spec names fails the container: running it without the
 * device it was given would be worse.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  errnoCode,
  errorMessage,
} from '../../errors.js';
import type { ContainerConfig } from '../../generated/api.js';
import { checkAbsolutePath } from './mounts.js';
import { deviceFromPath } from './devices.js';
import type { OciDevice, OciDeviceRule, OciMount } from './types.js';

/** Where CDI spec files live by default; a later directory wins for the same device. */
export const DEFAULT_CDI_SPEC_DIRS = ['/etc/cdi', '/var/run/cdi'];

const ANNOTATION_PREFIX = 'cdi.k8s.io/';
/** vendor.com/class, the kind of a spec. */
const KIND = '[a-z0-9][a-z0-9.-]*/[a-zA-Z0-9][a-zA-Z0-9._-]*';
const KIND_RE = new RegExp(`^${KIND}$`);
const QUALIFIED_NAME = new RegExp(`^${KIND}=[a-zA-Z0-9][a-zA-Z0-9_.:-]*$`);
const HOOK_NAMES = new Set([
  'prestart',
  'createRuntime',
  'createContainer',
  'startContainer',
  'poststart',
  'poststop',
]);

interface CdiDeviceNode {
  path: string;
  hostPath?: string;
  type?: string;
  major?: number;
  minor?: number;
  fileMode?: number;
  permissions?: string;
  uid?: number;
  gid?: number;
}

interface CdiMount {
  hostPath: string;
  containerPath: string;
  type?: string;
  options?: string[];
}

interface CdiHook {
  hookName: string;
  path: string;
  args?: string[];
  env?: string[];
  timeout?: number;
}

interface CdiContainerEdits {
  env?: string[];
  deviceNodes?: CdiDeviceNode[];
  mounts?: CdiMount[];
  hooks?: CdiHook[];
  additionalGIDs?: number[];
  /** Newer edits berth does not apply: a device that needs them is refused, not half-given. */
  intelRdt?: unknown;
  netDevices?: unknown[];
}

interface CdiSpec {
  cdiVersion: string;
  kind: string;
  devices: { name: string; containerEdits?: CdiContainerEdits }[];
  containerEdits?: CdiContainerEdits;
}

export interface OciHook {
  path: string;
  args?: string[];
  env?: string[];
  timeout?: number;
}

/** What the named devices add to a container's spec. */
export interface CdiEdits {
  env: string[];
  devices: OciDevice[];
  deviceRules: OciDeviceRule[];
  mounts: OciMount[];
  hooks: Record<string, OciHook[]>;
  additionalGids: number[];
}

/** The CDI devices a container asks for: CDI_devices first, then `cdi.k8s.io/*` annotations; each once. */
export function cdiDeviceNames(config: Pick<ContainerConfig, 'CDIDevices' | 'annotations'>): string[] {
  const names = config.CDIDevices.map((d) => d.name);
  for (const [key, value] of Object.entries(config.annotations ?? {})) {
    if (!key.startsWith(ANNOTATION_PREFIX)) continue;
    names.push(...value.split(',').map((name) => name.trim()));
  }
  return [...new Set(names.filter((name) => name !== ''))];
}

/** Every spec file in the directories, later ones overriding earlier ones device by device. */
async function loadSpecs(dirs: readonly string[]): Promise<{
  devices: Map<string, { spec: CdiSpec; edits?: CdiContainerEdits; file: string }>;
  broken: string[];
}> {
  const devices = new Map<string, { spec: CdiSpec; edits?: CdiContainerEdits; file: string }>();
  const broken: string[] = [];
  for (const dir of dirs) {
    let entries: string[];
    try {
      entries = (await readdir(dir)).sort();
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') continue;
      throw err;
    }
    for (const entry of entries) {
      if (!/\.(json|ya?ml)$/.test(entry)) continue;
      const file = join(dir, entry);
      try {
        const text = await readFile(file, 'utf8');
        const spec = checkSpec(
          entry.endsWith('.json') ? (JSON.parse(text) as unknown) : await parseYaml(text),
        );
        for (const device of spec.devices)
          devices.set(`${spec.kind}=${device.name}`, { spec, edits: device.containerEdits, file });
      } catch (err) {
        broken.push(`${file} (${errorMessage(err)})`);
      }
    }
  }
  return { devices, broken };
}

/** YAML is loaded on the first YAML spec: a node without CDI devices never carries the parser. */
async function parseYaml(text: string): Promise<unknown> {
  const { parse } = await import('yaml');
  return parse(text) as unknown;
}

function checkSpec(value: unknown): CdiSpec {
  const spec = value as Partial<CdiSpec> | null;
  if (!spec || typeof spec !== 'object') throw new Error('not a CDI spec');
  if (typeof spec.cdiVersion !== 'string') throw new Error('no cdiVersion');
  if (typeof spec.kind !== 'string' || !KIND_RE.test(spec.kind)) {
    throw new Error(`kind ${JSON.stringify(spec.kind)} is not vendor/class`);
  }
  if (!Array.isArray(spec.devices)) throw new Error('no devices');
  for (const device of spec.devices) {
    if (!device || typeof device.name !== 'string') throw new Error('a device without a name');
  }
  return spec as CdiSpec;
}

/**
 * Resolves the named devices in the spec directories and collects their
 * edits (the spec-wide ones once per spec). NOT_FOUND names every device no
 * spec describes, and the spec files that could not be read.
 */
export async function cdiEditsFor(
  names: readonly string[],
  dirs: readonly string[],
  what: string,
): Promise<CdiEdits> {
  const edits: CdiEdits = {
    env: [],
    devices: [],
    deviceRules: [],
    mounts: [],
    hooks: {},
    additionalGids: [],
  };
  if (names.length === 0) return edits;
  for (const name of names) {
    if (!QUALIFIED_NAME.test(name)) {
      throw new InvalidArgumentError(
        `${what}: CDI device ${JSON.stringify(name)} is not vendor.com/class=name`,
      );
    }
  }
  const { devices, broken } = await loadSpecs(dirs);
  const missing = names.filter((name) => !devices.has(name));
  if (missing.length > 0) {
    const unreadable = broken.length > 0 ? `; unreadable spec files: ${broken.join(', ')}` : '';
    throw new NotFoundError(
      `${what}: CDI device${missing.length > 1 ? 's' : ''} ${missing.join(', ')} not found in ${dirs.join(', ')}${unreadable}`,
    );
  }
  const specsApplied = new Set<CdiSpec>();
  for (const name of names) {
    const found = devices.get(name)!;
    if (found.spec.containerEdits && !specsApplied.has(found.spec)) {
      specsApplied.add(found.spec);
      await applyEdits(edits, found.spec.containerEdits, `${what}: CDI spec ${found.file}`);
    }
    if (found.edits) await applyEdits(edits, found.edits, `${what}: CDI device ${name}`);
  }
  return edits;
}

async function applyEdits(into: CdiEdits, edits: CdiContainerEdits, what: string): Promise<void> {
  const unsupported = [
    ...(edits.intelRdt ? ['intelRdt'] : []),
    ...((edits.netDevices?.length ?? 0) > 0 ? ['netDevices'] : []),
  ];
  if (unsupported.length > 0) {
    throw new FailedPreconditionError(
      `${what}: needs ${unsupported.join(' and ')} edits, which berth does not apply`,
    );
  }
  for (const entry of edits.env ?? []) {
    if (typeof entry !== 'string' || !entry.includes('=') || entry.startsWith('=')) {
      throw new InvalidArgumentError(`${what}: environment entry ${JSON.stringify(entry)} is not NAME=value`);
    }
    into.env.push(entry);
  }
  for (const node of edits.deviceNodes ?? []) {
    const device = await deviceNode(node, what);
    into.devices.push(device);
    into.deviceRules.push({
      allow: true,
      type: device.type === 'b' ? 'b' : 'c',
      major: device.major,
      minor: device.minor,
      access: permissions(node.permissions, what),
    });
  }
  for (const mount of edits.mounts ?? []) {
    const options = mount.options ?? [];
    const type = mount.type || 'bind';
    const bind = type === 'bind' && !options.some((o) => o === 'bind' || o === 'rbind');
    into.mounts.push({
      destination: checkAbsolutePath(mount.containerPath, `${what}: mount containerPath`),
      type,
      source: type === 'bind' ? checkAbsolutePath(mount.hostPath, `${what}: mount hostPath`) : mount.hostPath,
      options: bind ? ['rbind', ...options] : options,
    });
  }
  for (const hook of edits.hooks ?? []) {
    if (!HOOK_NAMES.has(hook.hookName)) {
      throw new InvalidArgumentError(`${what}: hook ${JSON.stringify(hook.hookName)} is not an OCI hook`);
    }
    (into.hooks[hook.hookName] ??= []).push({
      path: checkAbsolutePath(hook.path, `${what}: hook path`),
      ...(hook.args ? { args: hook.args } : {}),
      ...(hook.env ? { env: hook.env } : {}),
      ...(hook.timeout ? { timeout: hook.timeout } : {}),
    });
  }
  for (const gid of edits.additionalGIDs ?? []) {
    if (!Number.isInteger(gid) || gid < 0)
      throw new InvalidArgumentError(`${what}: additional GID ${gid} is not valid`);
    if (gid !== 0 && !into.additionalGids.includes(gid)) into.additionalGids.push(gid);
  }
}

/** The node as the container gets it: type and numbers from the host's node unless the spec gives them all. */
async function deviceNode(node: CdiDeviceNode, what: string): Promise<OciDevice> {
  const path = checkAbsolutePath(node.path, `${what}: device node path`);
  let device: OciDevice;
  if (
    (node.type === 'c' || node.type === 'b') &&
    Number.isInteger(node.major) &&
    Number.isInteger(node.minor)
  ) {
    device = { type: node.type, path, major: node.major!, minor: node.minor! };
  } else {
    const hostPath = checkAbsolutePath(node.hostPath || path, `${what}: device node hostPath`);
    let found: OciDevice | undefined;
    try {
      found = await deviceFromPath(hostPath, path);
    } catch (err) {
      throw new InvalidArgumentError(`${what}: device node ${hostPath}: ${errorMessage(err)}`, {
        cause: err,
      });
    }
    if (!found) throw new InvalidArgumentError(`${what}: ${hostPath} is not a device node`);
    device = found;
  }
  if (node.fileMode !== undefined) device.fileMode = node.fileMode;
  if (node.uid !== undefined) device.uid = node.uid;
  if (node.gid !== undefined) device.gid = node.gid;
  return device;
}

function permissions(given: string | undefined, what: string): string {
  const access = given || 'rwm';
  if (!/^[rwm]{1,3}$/.test(access))
    throw new InvalidArgumentError(`${what}: device permissions ${JSON.stringify(access)}`);
  return access;
}
