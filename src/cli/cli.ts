import { ConfigError, loadConfig, DEFAULT_CONFIG_FILE } from '../config/load.js';
import { renderConfig } from '../config/render.js';
import { SocketBusyError } from '../server/socket.js';
import { BERTH_VERSION } from '../server/version.js';
import { Daemon } from '../daemon.js';
import { parseArgs, UsageError, type ParsedArgs } from './args.js';

const COMMON_HELP = `Options:
  --config FILE        main config file (default ${DEFAULT_CONFIG_FILE}; drop-ins from FILE.d/*.toml)
  --SECTION.KEY VALUE  any config key, e.g. --server.socket /run/berth/berth.sock (see 'berth config')
  -h, --help           this help`;

const HELP: Record<string, string> = {
  berth: `berth — a Kubernetes container runtime (CRI v1)

Usage: berth COMMAND [options]

Commands:
  serve          run the CRI server
  config         print the effective configuration as commented TOML
  version        print berth's version
  image import   load an OCI layout or docker-save tarball into the image store

Run 'berth COMMAND --help' for a command's options.`,
  serve: `Usage: berth serve [options]

Runs the CRI gRPC server on server.socket until SIGTERM or SIGINT (in-flight
calls finish first). SIGHUP reloads the reloadable settings (log level,
image registries and pinned images, search registries, pull progress timeout)
and makes new registry connections read the CA files and the system CA store
again.

${COMMON_HELP}`,
  config: `Usage: berth config [options]

Prints the configuration berth would run with (files, drop-ins and flags
applied) as TOML that berth can load back.

${COMMON_HELP}`,
  version: `Usage: berth version

Prints berth's version and the CRI API version it serves.`,
  'image import': `Usage: berth image import FILE [options]

Loads an OCI image-layout tarball or a 'docker save' archive. Goes through the
running daemon on server.socket when it answers, else straight into the store.

${COMMON_HELP}`,
};

const COMMAND_OPTIONS = { config: true, help: false };

function fail(message: string, code = 1): never {
  process.stderr.write(`berth: ${message}\n`);
  process.exit(code);
}

async function serve(args: ParsedArgs): Promise<void> {
  const daemon = await Daemon.create({
    file: args.options.config as string | undefined,
    flags: args.configFlags,
  });
  const shutdown = (signal: string) => {
    daemon.log.info({ signal }, 'shutting down');
    daemon.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        daemon.log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGHUP', () => {
    daemon
      .reload()
      .catch((err: unknown) => daemon.log.error({ err }, 'reload failed; keeping the current configuration'));
  });
  await daemon.start();
}

async function main(argv: string[]): Promise<void> {
  let command = argv[0] ?? '';
  let rest = argv.slice(1);
  if (command === 'image') {
    command = `image ${rest[0] ?? ''}`.trim();
    rest = rest.slice(1);
  }
  if (command === '' || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(HELP.berth + '\n');
    return;
  }
  if (!(command in HELP)) fail(`unknown command '${command}'\n\n${HELP.berth}`, 2);
  const args = parseArgs(rest, COMMAND_OPTIONS);
  if (args.options.help) {
    process.stdout.write(HELP[command] + '\n');
    return;
  }
  switch (command) {
    case 'serve':
      return serve(args);
    case 'config': {
      const { config } = await loadConfig({
        file: args.options.config as string | undefined,
        flags: args.configFlags,
      });
      process.stdout.write(renderConfig(config));
      return;
    }
    case 'version':
      process.stdout.write(`berth ${BERTH_VERSION}\nCRI API v1 (runtime.v1)\n`);
      return;
    case 'image import': {
      const { importImageCommand } = await import('./image-import.js');
      return importImageCommand(args);
    }
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  if (err instanceof UsageError) fail(`${err.message} (see --help)`, 2);
  if (err instanceof ConfigError || err instanceof SocketBusyError) fail(err.message);
  fail(err instanceof Error ? (err.stack ?? err.message) : String(err));
});
