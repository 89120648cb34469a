/**
 * The `hostManager` command line (yargs). Without a sub-command it runs the
 * controller; every other command is a one-shot client of the running controller's
 * HTTP API, one file per command group. `runCli` never exits the process: it returns
 * the exit code (io.ts), so the interactive console can run the same commands typed in.
 */
import yargs from 'yargs';
import { defaultDataDir } from '../defaults.js';
import { brokerCommands } from './broker.js';
import { controllerCommand } from './controller-command.js';
import type { ControllerRunner } from './controller-command.js';
import { deviceCommands } from './devices.js';
import { EXIT, UsageError, createCliContext, processIO } from './io.js';
import { imageCommands } from './images.js';
import type { CliIO } from './io.js';
import { modelCommands } from './models.js';
import { requestCommands } from './requests.js';
import { rolloutCommands } from './rollouts.js';

export async function runCli(argv: readonly string[], io: CliIO = processIO, opts: { env?: NodeJS.ProcessEnv; controller?: ControllerRunner; inConsole?: boolean } = {}): Promise<number> {
  const env = opts.env ?? process.env;
  const ctx = createCliContext(io, env, opts.inConsole ?? false);
  // Shell completion is yargs' own, which needs a parser without the default (controller) command
  // and without an output callback; it prints to stdout.
  const completing = !opts.inConsole && (argv[0] === 'completion' || argv.includes('--get-yargs-completions'));
  let parser = yargs([...argv])
    .scriptName('hostManager')
    .exitProcess(false)
    .strict()
    .version(false)
    .wrap(Math.min(110, process.stdout.columns ?? 100))
    .option('url', { type: 'string', describe: 'controller API URL (env EDGEFLEET_URL; default from <data-dir>/controller.json)' })
    .option('token', { type: 'string', describe: 'operator token (env EDGEFLEET_OPERATOR_TOKEN; default <data-dir>/operator.token)' })
    .option('data-dir', { type: 'string', default: defaultDataDir(env), describe: 'data directory (env EDGEFLEET_DATA)', defaultDescription: '~/.edgefleet' })
    .option('json', { type: 'boolean', default: false, describe: 'machine-readable output' });
  if (!completing) parser = controllerCommand(parser, ctx, opts.controller);
  parser = deviceCommands(parser, ctx);
  parser = brokerCommands(parser, ctx);
  parser = modelCommands(parser, ctx);
  parser = imageCommands(parser, ctx);
  parser = rolloutCommands(parser, ctx);
  parser = requestCommands(parser, ctx)
    .fail((msg, err) => {
      // yargs: a usage problem (msg) or an error thrown by a handler (err)
      if (err && !(err instanceof UsageError)) throw err;
      ctx.setCode(EXIT.usage);
      io.err(`hostManager: ${msg ?? err?.message}\nRun \`hostManager --help\` for usage.`);
    })
    .help();
  if (completing) {
    await parser.completion('completion', 'print a bash/zsh completion script').parseAsync();
    return EXIT.ok;
  }
  if (opts.inConsole) parser = parser.help(false);
  else parser = parser.epilogue(`Shell completion: hostManager completion >> ~/.bashrc (or ~/.zshrc)`);
  try {
    let helpText: string | undefined;
    await parser.parseAsync([...argv], {}, (_err, _argv, output) => {
      helpText = output;
    });
    if (helpText) io.out(helpText);
  } catch (error) {
    io.err(`hostManager: ${(error as Error).message}`);
    return ctx.code() === EXIT.ok ? EXIT.failed : ctx.code();
  }
  return ctx.code();
}
