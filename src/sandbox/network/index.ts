/**
 * Pod networking: persistent network namespaces plus CNI ADD/DEL of the
 * configured network, with a per-pod record of what was attached (so DEL uses
 * the same config and port mappings even after the config files change).
 */
import { mkdir, readdir, readFile, unlink } from 'node:fs/promises';
import { writeFileReplace } from '../../util/atomic-file.js';
import { dirname, join } from 'node:path';
import type { BerthConfig } from '../../config/schema.js';
import type { Logger } from '../../log.js';
import {
  InternalError,
  InvalidArgumentError,
  UnavailableError,
  errnoCode,
  errorMessage,
} from '../../errors.js';
import { findCniNetwork, type CniNetworkList } from '../cni-config.js';
import type { HostPortMapping, PodIdentity, PodNetwork, PodNetworkStatus } from '../network-types.js';
import {
  addNetworkList,
  chainHasLoopback,
  checkNetworkList,
  checkVersions,
  delNetworkList,
  loopbackNetwork,
  resolvePlugins,
  resultIps,
  type CniExecOptions,
  type CniInvocation,
} from './cni.js';
import { createNetns, isNetns, netnsPath, removeNetns } from './netns.js';
import { removeBridgeMasq, usesBridgeMasq } from './masq-cleanup.js';

export { CniError } from './cni.js';
export { listNetns, isNetns, netnsPath } from './netns.js';

export const POD_IFNAME = 'eth0';
const DEFAULT_PLUGIN_TIMEOUT_MS = 60_000;

export interface PodNetworkOptions {
  /** A plugin running longer than this is killed (default 60 s). */
  pluginTimeoutMs?: number;
}

/** What ADD used, kept under run_root so DEL repeats it exactly. */
interface Attachment {
  pod: PodIdentity;
  network: CniNetworkList;
  portMappings: HostPortMapping[];
  result?: unknown;
}

/** The record lives under run_root, which does not outlive a reboot (nor do the netns and veths it describes). */
async function writeVolatileJson(path: string, value: unknown): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  await writeFileReplace(path, JSON.stringify(value));
}

/**
 * Runs operations on one key one at a time. Keyed by pod: the CNI spec only
 * forbids parallel operations on the same container, and the plugins lock
 * what they share (host-local its data dir, bridge tolerates a bridge or
 * address another ADD made first, iptables -w its own lock). A lock per
 * network serialised every pod's ADD behind the others'.
 */
class KeyedLock {
  private readonly tails = new Map<string, Promise<void>>();
  async with<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const tail = previous.then(() => new Promise<void>((resolve) => (release = resolve)));
    this.tails.set(key, tail);
    await previous;
    try {
      return await fn();
    } finally {
      release();
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }
}

// Values go into CNI_ARGS, which is split on ';' and '='.
function argValue(what: string, value: string, pod: PodIdentity): string {
  if (/[;=\0\n]/.test(value)) {
    throw new InvalidArgumentError(
      `pod ${pod.id}: ${what} ${JSON.stringify(value)} contains ';', '=' or a control character`,
    );
  }
  return value;
}

function invocation(pod: PodIdentity, netns: string, portMappings: HostPortMapping[]): CniInvocation {
  return {
    containerId: pod.id,
    netns,
    ifName: POD_IFNAME,
    args: [
      ['IgnoreUnknown', '1'],
      ['K8S_POD_NAMESPACE', argValue('namespace', pod.namespace, pod)],
      ['K8S_POD_NAME', argValue('name', pod.name, pod)],
      ['K8S_POD_INFRA_CONTAINER_ID', argValue('id', pod.id, pod)],
      ['K8S_POD_UID', argValue('uid', pod.uid, pod)],
    ],
    capabilityArgs: {
      portMappings: portMappings.map((m) => ({
        hostPort: m.hostPort,
        containerPort: m.containerPort,
        protocol: m.protocol,
        hostIP: m.hostIP,
      })),
    },
  };
}

function validatePortMappings(pod: PodIdentity, mappings: HostPortMapping[]): void {
  for (const m of mappings) {
    const ok = (p: number) => Number.isInteger(p) && p >= 1 && p <= 65535;
    if (!ok(m.hostPort) || !ok(m.containerPort)) {
      throw new InvalidArgumentError(
        `pod ${pod.id}: port mapping ${m.hostPort}->${m.containerPort}/${m.protocol} has a port outside 1-65535`,
      );
    }
  }
}

export function createPodNetwork(
  config: () => BerthConfig,
  log: Logger,
  options: PodNetworkOptions = {},
): PodNetwork & {
  /** CNI CHECK of a recorded attachment (cniVersion 0.4.0 and newer). */
  check(pod: PodIdentity, netnsPath: string): Promise<void>;
  /**
   * Start-up reconciliation: CNI DEL (netns gone or not) for every recorded
   * attachment whose pod id is not in `known`, releasing IPs and rules a
   * crash left behind. Returns the pod ids cleaned.
   */
  sweepAttachments(known: ReadonlySet<string>): Promise<string[]>;
} {
  const locks = new KeyedLock();
  const execOptions = (): CniExecOptions => ({
    binDirs: config().network.cni_bin_dirs,
    timeoutMs: options.pluginTimeoutMs ?? DEFAULT_PLUGIN_TIMEOUT_MS,
  });
  const attachmentFile = (podId: string) => join(config().run_root, 'cni-attachments', `${podId}.json`);

  async function readAttachment(podId: string): Promise<Attachment | undefined> {
    try {
      return JSON.parse(await readFile(attachmentFile(podId), 'utf8')) as Attachment;
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return undefined;
      log.warn(
        { podId, err: errorMessage(err) },
        'unreadable CNI attachment record; using the current config',
      );
      return undefined;
    }
  }

  async function currentNetwork(): Promise<CniNetworkList> {
    const { cni_conf_dir, network_name } = config().network;
    const lookup = await findCniNetwork(cni_conf_dir, network_name);
    if (!lookup.ok) throw new UnavailableError(`pod network is not ready: ${lookup.message}`);
    return lookup.network;
  }

  return {
    async createNetns(podId) {
      return createNetns(config().run_root, podId);
    },

    async removeNetns(path) {
      await removeNetns(path);
    },

    async attach(pod, nsPath, portMappings): Promise<PodNetworkStatus> {
      netnsPath(config().run_root, pod.id); // validates the id
      validatePortMappings(pod, portMappings);
      const inv = invocation(pod, nsPath, portMappings);
      if (!(await isNetns(nsPath))) {
        throw new InternalError(`pod ${pod.id}: ${nsPath} is not a network namespace`);
      }
      const network = await currentNetwork();
      const exec = execOptions();
      await checkVersions(network, exec);
      const loopbackNet = chainHasLoopback(network) ? undefined : loopbackNetwork(network.cniVersion);
      if (loopbackNet) await resolvePlugins(loopbackNet, exec.binDirs); // missing: refuse before any ADD
      return locks.with(pod.id, async () => {
        const started = process.hrtime.bigint();
        // Recorded before ADD: after a crash mid-ADD, DEL must use this config.
        await writeVolatileJson(attachmentFile(pod.id), { pod, network, portMappings } satisfies Attachment);
        // `lo` comes up beside the chain, not after it: its own plugin run
        // only touches the pod's namespace, which is torn down with the pod.
        const loopback = loopbackNet
          ? addNetworkList(loopbackNet, { ...inv, ifName: 'lo' }, exec)
          : Promise.resolve();
        const [chain, lo] = await Promise.allSettled([addNetworkList(network, inv, exec), loopback]);
        if (chain.status === 'rejected' || lo.status === 'rejected') {
          // addNetworkList already deleted what it had added when it failed.
          if (chain.status === 'fulfilled') {
            await delNetworkList(network, inv, exec, chain.value).catch((err: unknown) =>
              log.warn({ podId: pod.id, err: errorMessage(err) }, 'undoing CNI ADD after a failed loopback'),
            );
          }
          await unlink(attachmentFile(pod.id)).catch(() => undefined);
          throw chain.status === 'rejected' ? chain.reason : (lo as PromiseRejectedResult).reason;
        }
        const result = chain.value;
        await writeVolatileJson(attachmentFile(pod.id), {
          pod,
          network,
          portMappings,
          result,
        } satisfies Attachment);
        const ips = resultIps(result);
        log.debug(
          { podId: pod.id, network: network.name, ips, ms: Number(process.hrtime.bigint() - started) / 1e6 },
          'CNI ADD done',
        );
        return { ips, networkName: network.name, result };
      });
    },

    async detach(pod, nsPath, portMappings, prevResult) {
      netnsPath(config().run_root, pod.id); // validates the id (it names the record file)
      const recorded = await readAttachment(pod.id);
      let network = recorded?.network;
      if (!network) {
        try {
          network = await currentNetwork();
        } catch (err) {
          // Nothing to run DEL with; kubelet's stop must still succeed.
          log.warn(
            { podId: pod.id, err: errorMessage(err) },
            'no CNI config to tear down the pod network with',
          );
          return;
        }
      }
      const mappings = recorded?.portMappings ?? portMappings;
      // Plugins treat an empty CNI_NETNS as "namespace gone" and still release IPs and rules.
      const netns = nsPath && (await isNetns(nsPath)) ? nsPath : '';
      const inv = invocation(pod, netns, mappings);
      const exec = execOptions();
      await locks.with(pod.id, async () => {
        await delNetworkList(network, inv, exec, prevResult ?? recorded?.result);
        if (netns === '' && usesBridgeMasq(network)) {
          const removed = await removeBridgeMasq(network, pod.id);
          if (removed.length)
            log.info({ podId: pod.id, removed }, 'removed masquerade rules the bridge plugin left');
        }
      });
      await unlink(attachmentFile(pod.id)).catch((err: unknown) => {
        if (errnoCode(err) !== 'ENOENT') throw err;
      });
    },

    async sweepAttachments(known) {
      const dir = join(config().run_root, 'cni-attachments');
      let names: string[];
      try {
        names = await readdir(dir);
      } catch (err) {
        if (errnoCode(err) === 'ENOENT') return [];
        throw err;
      }
      const cleaned: string[] = [];
      for (const name of names) {
        if (name.endsWith('.tmp')) {
          await unlink(join(dir, name)).catch(() => undefined);
          continue;
        }
        const id = name.replace(/\.json$/, '');
        if (!name.endsWith('.json') || known.has(id)) continue;
        const recorded = await readAttachment(id);
        const pod = recorded?.pod ?? { id, name: '', namespace: '', uid: '' };
        try {
          const path = netnsPath(config().run_root, id);
          await this.detach(pod, path, recorded?.portMappings ?? [], recorded?.result);
          await removeNetns(path);
          cleaned.push(id);
          log.warn({ podId: id }, 'released the network of a pod no record names');
        } catch (err) {
          log.error({ podId: id, err: errorMessage(err) }, 'releasing an orphaned pod network failed');
        }
      }
      return cleaned;
    },

    async check(pod, nsPath) {
      netnsPath(config().run_root, pod.id);
      const recorded = await readAttachment(pod.id);
      if (!recorded?.result) throw new InternalError(`pod ${pod.id} has no recorded CNI attachment to check`);
      const inv = invocation(pod, nsPath, recorded.portMappings);
      await checkNetworkList(recorded.network, inv, execOptions(), recorded.result);
    },

    async ready() {
      const { cni_conf_dir, network_name, cni_bin_dirs } = config().network;
      const lookup = await findCniNetwork(cni_conf_dir, network_name);
      if (!lookup.ok) return lookup;
      try {
        await resolvePlugins(lookup.network, cni_bin_dirs);
        if (!chainHasLoopback(lookup.network)) {
          await resolvePlugins(loopbackNetwork(lookup.network.cniVersion), cni_bin_dirs);
        }
      } catch (err) {
        return { ok: false, reason: 'NetworkPluginNotReady', message: errorMessage(err) };
      }
      return { ok: true };
    },
  };
}
