/**
 * Port forwarding over WebSocket (kubelet's v4 channel protocol): for the
 * i-th port, channel 2i carries data both ways and channel 2i+1 errors. The
 * first message on each channel is the port, 16-bit little-endian. Each port
 * gets one connection, opened at once; the socket closes when all have ended.
 */
import type { Logger } from '../log.js';
import { HALF_CLOSE_GRACE_MS, dialInNetns } from './netns-dial.js';
import type { PortForwardTarget } from './types.js';
import type { ChannelSocket } from './websocket.js';

export async function serveWsPortForward(
  channels: ChannelSocket,
  ports: number[],
  options: { podSandboxId: string; target: PortForwardTarget; log: Logger },
): Promise<void> {
  const relays: (() => void)[] = [];
  channels.ws.once('close', () => relays.forEach((kill) => kill()));
  await Promise.all(
    ports.map(async (port, i) => {
      const dataChannel = 2 * i;
      const errorChannel = 2 * i + 1;
      // Claimed before any await: the client may send data as soon as it is
      // connected, and messages on a channel nobody reads yet are dropped.
      const input = channels.reader(dataChannel);
      const portBytes = Buffer.alloc(2);
      portBytes.writeUInt16LE(port);
      await channels.send(dataChannel, portBytes);
      await channels.send(errorChannel, portBytes);
      const report = (failure: string) => {
        options.log.debug({ port, podSandboxId: options.podSandboxId, failure }, 'port forward failed');
        return channels.send(
          errorChannel,
          Buffer.from(`error forwarding port ${port} to pod ${options.podSandboxId}, uid : ${failure}`),
        );
      };
      let relay;
      try {
        relay = await dialInNetns(options.target.netnsPath, port);
      } catch (err) {
        await report(err instanceof Error ? err.message : String(err));
        return;
      }
      relays.push(relay.kill);
      input.pipe(relay.input);
      const writer = channels.writer(dataChannel);
      const flushed = new Promise<void>((resolve) => {
        writer.once('finish', () => resolve());
        writer.once('error', () => resolve());
      });
      relay.output.pipe(writer);
      const failure = await relay.settled(HALF_CLOSE_GRACE_MS);
      await flushed;
      if (failure) await report(failure);
    }),
  );
  channels.close(1000);
}
