#!/usr/bin/env node
/**
 * deviceAgent: runs the edgefleet device agent in the foreground (for systemd).
 * Exit codes: 0 after SIGTERM/SIGINT or `exit`, 1 on a fatal error, 2 on bad configuration.
 */
import { ConfigError, createAgent, createAgentLogger, loadConfig, parseFlags, redactConfig } from '../src/index.js';

async function main(): Promise<number> {
  if (process.argv.includes('--help')) {
    await parseFlags(['--help']);
    return 0;
  }
  let loaded;
  try {
    loaded = await loadConfig({ argv: process.argv.slice(2), env: process.env });
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`deviceAgent: ${error.message}\n`);
      return 2;
    }
    throw error;
  }
  const { config, warnings } = loaded;
  const { logger, flush } = createAgentLogger(config.dataDir, config.logLevel);
  for (const warning of warnings) logger.warn(warning);
  logger.info({ config: redactConfig(config) }, 'configuration');

  let done!: (code: number) => void;
  const finished = new Promise<number>((resolve) => (done = resolve));
  const agent = createAgent(config, { logger, onExit: () => done(0) });
  const shutdown = (signal: string): void => {
    logger.info({ signal }, 'signal received');
    agent.stop(signal).then(
      () => done(0),
      (error: unknown) => {
        logger.error({ err: error }, 'stop failed');
        done(1);
      },
    );
  };
  process.once('SIGTERM', () => shutdown('SIGTERM'));
  process.once('SIGINT', () => shutdown('SIGINT'));
  try {
    await agent.start();
  } catch (error) {
    logger.fatal({ err: error }, 'agent failed to start');
    if ((error as NodeJS.ErrnoException).code === 'EADDRINUSE') {
      // said in a sentence too: the JSON line above is for the journal, this one for the person at the terminal
      process.stderr.write(
        `deviceAgent: port ${config.httpPort} is already in use, so the inference API cannot listen there; another agent on this machine? ` +
          `give this one its own: --http-port ${config.httpPort + 1} (or EDGEFLEET_HTTP_PORT, "httpPort" in the config file; --no-http turns the API off)\n`,
      );
    }
    await agent.stop('start failed').catch(() => undefined);
    flush();
    return 1;
  }
  const code = await finished;
  flush();
  return code;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`deviceAgent: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(1);
  },
);
