#!/usr/bin/env node
/**
 * hostManager: the controller (no sub-command) or a one-shot client of the
 * running controller's HTTP API. See host-manager/README.md.
 */
import { runCli } from '../src/cli/run.js';
import { processIO } from '../src/cli/io.js';
import { runController } from '../src/cli/controller.js';

const code = await runCli(process.argv.slice(2), processIO, { controller: (args, io) => runController(args, io) });
process.exitCode = code;
// Open handles (a watcher, sockets being closed) must not keep a finished command alive.
setTimeout(() => process.exit(code), 200).unref();
