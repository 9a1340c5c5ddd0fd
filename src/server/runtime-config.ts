import { CgroupDriver } from '../generated/api.js';
import type { ServerContext } from './context.js';
import type { RuntimeImpl } from './rpc.js';

export function runtimeConfigRpcs(ctx: ServerContext): RuntimeImpl {
  return {
    runtimeConfig: async () => ({
      linux: { cgroupDriver: ctx.cgroupDriver === 'systemd' ? CgroupDriver.SYSTEMD : CgroupDriver.CGROUPFS },
    }),
  };
}
