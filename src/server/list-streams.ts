import {
  Container,
  ContainerStats,
  Image,
  PodSandbox,
  PodSandboxMetrics,
  PodSandboxStats,
  type MessageFns,
} from '../generated/api.js';
import type { ImageImpl, RuntimeImpl } from './rpc.js';

/** Leaves room for the response envelope under the message size limit. */
const CHUNK_FRACTION = 0.5;

/**
 * Splits items into lists that each encode to at most `maxBytes` (a single
 * oversized item still goes alone): each item appears exactly once, and
 * no list is empty.
 */
export function chunkBySize<T>(items: readonly T[], codec: MessageFns<T>, maxBytes: number): T[][] {
  const chunks: T[][] = [];
  let current: T[] = [];
  let size = 0;
  for (const item of items) {
    // Field tag + length prefix add at most ~6 bytes per repeated element.
    const itemSize = codec.encode(item).finish().length + 6;
    if (current.length > 0 && size + itemSize > maxBytes) {
      chunks.push(current);
      current = [];
      size = 0;
    }
    current.push(item);
    size += itemSize;
  }
  if (current.length > 0) chunks.push(current);
  return chunks;
}

/**
 * The Stream* RPCs answer what their List* counterparts answer, split into
 * messages under the gRPC size limit, so they are derived from the List*
 * handlers rather than written twice.
 */
export function deriveListStreams(runtime: RuntimeImpl, image: ImageImpl, maxMessageBytes: number): void {
  const limit = Math.floor(maxMessageBytes * CHUNK_FRACTION);
  const { listPodSandbox, listContainers, listContainerStats, listPodSandboxStats, listPodSandboxMetrics } =
    runtime;
  if (listPodSandbox && !runtime.streamPodSandboxes) {
    runtime.streamPodSandboxes = async (req, send, call) => {
      const res = await listPodSandbox({ filter: req.filter }, call);
      for (const chunk of chunkBySize(res.items, PodSandbox, limit)) send({ podSandboxes: chunk });
    };
  }
  if (listContainers && !runtime.streamContainers) {
    runtime.streamContainers = async (req, send, call) => {
      const res = await listContainers({ filter: req.filter }, call);
      for (const chunk of chunkBySize(res.containers, Container, limit)) send({ containers: chunk });
    };
  }
  if (listContainerStats && !runtime.streamContainerStats) {
    runtime.streamContainerStats = async (req, send, call) => {
      const res = await listContainerStats({ filter: req.filter }, call);
      for (const chunk of chunkBySize(res.stats, ContainerStats, limit)) send({ containerStats: chunk });
    };
  }
  if (listPodSandboxStats && !runtime.streamPodSandboxStats) {
    runtime.streamPodSandboxStats = async (req, send, call) => {
      const res = await listPodSandboxStats({ filter: req.filter }, call);
      for (const chunk of chunkBySize(res.stats, PodSandboxStats, limit)) send({ podSandboxStats: chunk });
    };
  }
  if (listPodSandboxMetrics && !runtime.streamPodSandboxMetrics) {
    runtime.streamPodSandboxMetrics = async (_req, send, call) => {
      const res = await listPodSandboxMetrics({}, call);
      for (const chunk of chunkBySize(res.podMetrics, PodSandboxMetrics, limit))
        send({ podSandboxMetrics: chunk });
    };
  }
  const { listImages } = image;
  if (listImages && !image.streamImages) {
    image.streamImages = async (req, send, call) => {
      const res = await listImages({ filter: req.filter }, call);
      for (const chunk of chunkBySize(res.images, Image, limit)) send({ images: chunk });
    };
  }
}
