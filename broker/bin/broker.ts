#!/usr/bin/env node
/**
 * broker: runs the edgefleet MQTT broker alone, in the foreground.
 * Prints one JSON line to stdout once listening: {"url":...,"ports":{...}}.
 * Exit codes: 0 after SIGTERM/SIGINT, 1 on a fatal error, 2 on bad configuration.
 *   broker hash-token < token.txt   prints the tokenHash for a credentials file
 */
import { pino } from 'pino';
import { hashSecret } from '@edgefleet/node-io';
import { BrokerConfigError, brokerCli, createBroker, parseBrokerArgs } from '../src/index.js';

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8').trim();
}

async function main(argv: string[]): Promise<number | undefined> {
  if (argv[0] === 'hash-token') {
    const token = await readStdin();
    if (token.length < 16) {
      process.stderr.write('broker hash-token: give a token of at least 16 characters on stdin (not as an argument, so it stays out of shell history)\n');
      return 2;
    }
    process.stdout.write(`${hashSecret(token)}\n`);
    return 0;
  }
  if (argv.includes('--help') || argv.includes('-h')) {
    brokerCli([]).showHelp((s) => process.stdout.write(`${s}\n`));
    return 0;
  }
  let config;
  try {
    config = await parseBrokerArgs(argv);
  } catch (err) {
    if (err instanceof BrokerConfigError) {
      process.stderr.write(`broker: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  const logger = pino({ name: 'broker', level: config.logLevel }, pino.destination(2));
  for (const w of config.warnings) logger.warn(w);
  let broker;
  try {
    broker = await createBroker({ ...config.options, logger });
  } catch (err) {
    logger.fatal({ err: (err as Error).message }, 'broker failed to start');
    process.stderr.write(`broker: ${(err as Error).message}\n`);
    return err instanceof BrokerConfigError ? 2 : 1;
  }
  process.stdout.write(`${JSON.stringify({ url: broker.url, ports: broker.ports })}\n`);
  const running = broker;
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      logger.info({ signal }, 'stopping');
      running.close().then(resolve, (err: unknown) => {
        logger.error({ err }, 'close failed');
        resolve();
      });
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code ?? 0),
  (err: unknown) => {
    process.stderr.write(`broker: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
