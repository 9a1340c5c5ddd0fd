import { credentials, type Client, type ServiceError, Metadata } from '@grpc/grpc-js';
import {
  RuntimeServiceClient,
  ImageServiceClient,
  type RuntimeServiceService,
  type ImageServiceService,
} from '../../src/generated/api.js';

type Callback<R> = (err: ServiceError | null, res: R) => void;
type UnaryMethod<Q, R> = (req: Q, metadata: Metadata, options: object, cb: Callback<R>) => unknown;

/** Promise-returning view of a ts-proto grpc-js client: `await cri.runtime.version({})`. */
export type Promisified<Def> = {
  [K in keyof Def as Def[K] extends { responseStream: false } ? K : never]: Def[K] extends {
    requestSerialize: (value: infer Q) => Buffer;
    responseDeserialize: (value: Buffer) => infer R;
  }
    ? (req: Q, options?: { deadlineMs?: number }) => Promise<R>
    : never;
};

function promisify<Def>(client: Client): Promisified<Def> {
  return new Proxy(client, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver) as unknown;
      if (typeof prop !== 'string' || typeof value !== 'function' || prop in Object.prototype) {
        return value;
      }
      return (req: unknown, options: { deadlineMs?: number } = {}) =>
        new Promise((resolve, reject) => {
          const callOptions = { deadline: Date.now() + (options.deadlineMs ?? 120_000) };
          (value as UnaryMethod<unknown, unknown>).call(
            target,
            req,
            new Metadata(),
            callOptions,
            (err, res) => (err ? reject(err) : resolve(res)),
          );
        });
    },
  }) as unknown as Promisified<Def>;
}

export interface CriClients {
  runtime: Promisified<typeof RuntimeServiceService>;
  image: Promisified<typeof ImageServiceService>;
  rawRuntime: RuntimeServiceClient;
  rawImage: ImageServiceClient;
  close(): void;
}

export function connectCri(socketPath: string): CriClients {
  const opts = { 'grpc.max_receive_message_length': 16 * 1024 * 1024 };
  const rawRuntime = new RuntimeServiceClient(`unix://${socketPath}`, credentials.createInsecure(), opts);
  const rawImage = new ImageServiceClient(`unix://${socketPath}`, credentials.createInsecure(), opts);
  return {
    runtime: promisify<typeof RuntimeServiceService>(rawRuntime),
    image: promisify<typeof ImageServiceService>(rawImage),
    rawRuntime,
    rawImage,
    close() {
      rawRuntime.close();
      rawImage.close();
    },
  };
}
