// Generates TypeScript for the CRI contract from api/cri/api.proto with protoc
// (Debian's protobuf-compiler) and the pinned ts-proto plugin. The output is a
// pure function of those inputs, so it is not committed.
import { spawnSync } from 'node:child_process';
import { mkdirSync, rmSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'src', 'generated');
const plugin = join(root, 'node_modules', '.bin', 'protoc-gen-ts_proto');
if (!existsSync(plugin)) {
  console.error(`gen-proto: ${plugin} is missing; run npm ci first`);
  process.exit(1);
}
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
const options = [
  'outputServices=grpc-js',
  'env=node',
  'forceLong=bigint',
  'esModuleInterop=true',
  'importSuffix=.js',
  'useDate=false',
  'outputTypeRegistry=false',
  'useOptionals=none',
].join(',');
const result = spawnSync(
  'protoc',
  [
    `--plugin=protoc-gen-ts_proto=${plugin}`,
    `--ts_proto_out=${out}`,
    `--ts_proto_opt=${options}`,
    `--proto_path=${join(root, 'api', 'cri')}`,
    'api.proto',
  ],
  { stdio: 'inherit' },
);
if (result.error) {
  console.error(`gen-proto: cannot run protoc (${result.error.message}); install protobuf-compiler`);
  process.exit(1);
}
process.exit(result.status ?? 1);
