import { isIP } from 'node:net';
import { CgroupDriver } from '../generated/api.js';
import { InvalidArgumentError } from '../errors.js';
import type { ServerContext } from './context.js';
import type { RuntimeImpl } from './rpc.js';

/** Parses kubelet's pod CIDR ("10.0.0.0/24" or a comma-separated dual-stack pair). */
export function parsePodCidrs(text: string): string[] {
  if (text.trim() === '') return [];
  return text.split(',').map((part) => {
    const cidr = part.trim();
    const slash = cidr.indexOf('/');
    const ip = slash === -1 ? '' : cidr.slice(0, slash);
    const prefix = slash === -1 ? NaN : Number(cidr.slice(slash + 1));
    const family = isIP(ip);
    const max = family === 6 ? 128 : 32;
    if (family === 0 || !/^\d+$/.test(cidr.slice(slash + 1)) || prefix > max) {
      throw new InvalidArgumentError(
        `UpdateRuntimeConfig: pod CIDR ${JSON.stringify(cidr)} is not an IP/prefix`,
      );
    }
    return cidr;
  });
}

export function runtimeConfigRpcs(ctx: ServerContext): RuntimeImpl {
  return {
    runtimeConfig: async () => ({
      linux: { cgroupDriver: ctx.cgroupDriver === 'systemd' ? CgroupDriver.SYSTEMD : CgroupDriver.CGROUPFS },
    }),
    // kubelet pushes the node's pod CIDR here. Pod addressing comes from the
    // CNI config (its IPAM owns the ranges), so berth validates and records
    // it for Status verbose and logs a change, as CRI-O does.
    updateRuntimeConfig: async (request, call) => {
      const cidrs = parsePodCidrs(request.runtimeConfig?.networkConfig?.podCidr ?? '');
      if (cidrs.join(',') !== ctx.podCidrs.join(',')) {
        call.log.info({ podCidrs: cidrs, previous: ctx.podCidrs }, 'pod CIDR updated by kubelet');
        ctx.podCidrs = cidrs;
      }
      return {};
    },
  };
}
