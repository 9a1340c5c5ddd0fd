/**
 * The bridge plugin (containernetworking-plugins ≤ 1.x) finds the masquerade
 * rules to delete from the addresses on the pod's interface; when the netns is
 * already gone its DEL releases the IP but leaves the pod's CNI-<hash> chain
 * and POSTROUTING jump behind. berth removes those itself, by the names the
 * plugin derives from the network name and container id.
 */
import { createHash } from 'node:crypto';
import { run } from '../../util/run.js';
import type { CniNetworkList } from '../cni-config.js';

/** utils.FormatChainName of the plugins: "CNI-" + the first 24 hex of sha512(name + id). */
export function masqChainName(networkName: string, containerId: string): string {
  return `CNI-${createHash('sha512')
    .update(networkName + containerId)
    .digest('hex')
    .slice(0, 24)}`;
}

/** Splits an `iptables -S` line into arguments, honouring double quotes. */
export function splitRule(line: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  let token = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (c === '\\' && quoted && i + 1 < line.length) {
      cur += line[++i];
    } else if (c === '"') {
      quoted = !quoted;
      token = true;
    } else if (c === ' ' && !quoted) {
      if (token || cur) out.push(cur);
      cur = '';
      token = false;
    } else {
      cur += c;
    }
  }
  if (token || cur) out.push(cur);
  return out;
}

export function usesBridgeMasq(list: CniNetworkList): boolean {
  return list.plugins.some((p) => p.type === 'bridge' && p.ipMasq === true);
}

/**
 * Deletes the POSTROUTING jumps to the pod's masquerade chain and the chain,
 * for IPv4 and IPv6. Returns the families where something was removed.
 */
export async function removeBridgeMasq(list: CniNetworkList, containerId: string): Promise<string[]> {
  const chain = masqChainName(list.name, containerId);
  const removed: string[] = [];
  for (const cmd of ['iptables', 'ip6tables']) {
    const listed = await run(cmd, ['-w', '-t', 'nat', '-S', 'POSTROUTING'], { timeoutMs: 30_000 });
    if (listed.code !== 0) continue;
    let found = false;
    for (const line of listed.stdout.split('\n')) {
      const args = splitRule(line);
      if (args[0] !== '-A' || args[args.indexOf('-j') + 1] !== chain) continue;
      await run(cmd, ['-w', '-t', 'nat', '-D', ...args.slice(1)], { timeoutMs: 30_000 });
      found = true;
    }
    const flushed = await run(cmd, ['-w', '-t', 'nat', '-F', chain], { timeoutMs: 30_000 });
    if (flushed.code === 0) {
      await run(cmd, ['-w', '-t', 'nat', '-X', chain], { timeoutMs: 30_000 });
      found = true;
    }
    if (found) removed.push(cmd);
  }
  return removed;
}
