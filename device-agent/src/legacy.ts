/**
 * The original command channel: the C device client (Eclipse Paho) took
 * plain-text commands on the topic `hello` and printed what it did. The agent
 * offers the same channel when enabled, with the placeholders made real:
 *
 *   start    launch the configured inference program as a child (once)
 *   stop     SIGTERM it, SIGKILL after a timeout; nothing is killed when
 *            nothing runs (the original killed its own process group then)
 *   update   activate the newest installed version of every model
 *   install  run the configured install command
 *   done     acknowledged
 *   exit     disconnect and quit
 *
 * Only operators may publish on the topic (the broker's rule); retained messages
 * there are ignored, whoever planted them.
 *
 * The same commands arrive through the `legacy` request command.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import type { Logger } from 'pino';
import { LegacyCommandSchema } from '@edgefleet/protocol';
import type { LegacyCommand } from '@edgefleet/protocol';
import type { ModelService } from './models/index.js';

/** Every line the channel prints on stdout, in one place (the original client's wording). */
export const LEGACY_LINES = {
  connected: (topic: string) => `Subscribing to topic ${topic} using QoS1`,
  arrived: 'Message arrived',
  topic: (topic: string) => `     topic: ${topic}`,
  message: (text: string) => `   message: ${text}`,
  starting: 'Starting inference program...',
  started: (pid: number) => `Inference program started (pid ${pid})`,
  alreadyRunning: (pid: number) => `Inference program already running (pid ${pid})`,
  noProgram: 'No inference program configured',
  startFailed: (reason: string) => `Could not start inference program: ${reason}`,
  exited: (code: number | null, signal: string | null) =>
    `Inference program exited (${signal ? `signal ${signal}` : `code ${code}`})`,
  stopping: 'Stopping inference program...',
  stopped: 'Inference program stopped',
  killed: 'Inference program did not stop in time: killed',
  notRunning: 'No inference program running',
  updating: 'Updating model...',
  updated: (list: string) => `Model updated: ${list}`,
  upToDate: (list: string) => `Model already up to date: ${list}`,
  noModel: 'No model assigned to this device',
  updateFailed: (reason: string) => `Update failed: ${reason}`,
  installing: 'Installing...',
  installed: 'Install finished',
  installFailed: (reason: string) => `Install failed: ${reason}`,
  noInstall: 'No install command configured',
  done: 'Done acknowledged',
  exiting: 'Exiting...',
  unknown: (text: string) => `Unknown command: ${text}`,
  ignoredRetained: (topic: string) => `Ignored a retained message on ${topic}: commands are never retained`,
} as const;

export interface LegacyOptions {
  program: string[] | undefined;
  install: string[] | undefined;
  stopTimeoutMs: number;
  models: ModelService;
  logger: Logger;
  /** Where console lines go (stdout by default). */
  print?: (line: string) => void;
  /** Called for `exit`, after the answer has been given. */
  onExit: () => void;
}

export class LegacyChannel {
  private child: ChildProcess | undefined;
  private exited: Promise<void> | undefined;
  private readonly print: (line: string) => void;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly options: LegacyOptions) {
    this.print = options.print ?? ((line) => process.stdout.write(`${line}\n`));
  }

  /**
   * A plain-text message from the legacy topic: prints it as the original did, then runs it.
   * A retained message is ignored: the broker hands it to every new subscriber, so a retained
   * `exit` would stop the agent on each start (our broker refuses them; a third-party one may not).
   */
  onMessage(topic: string, payload: Buffer, retained = false): Promise<string> {
    const text = payload.toString('utf8').trim();
    if (retained) {
      this.options.logger.warn({ topic, text: text.slice(0, 80) }, 'ignored a retained message on the legacy topic: commands there are never retained');
      return Promise.resolve(this.say(LEGACY_LINES.ignoredRetained(topic)));
    }
    return this.enqueue(async () => {
      this.print(LEGACY_LINES.arrived);
      this.print(LEGACY_LINES.topic(topic));
      this.print(LEGACY_LINES.message(text));
      const command = LegacyCommandSchema.safeParse(text);
      if (!command.success) return this.say(LEGACY_LINES.unknown(text.slice(0, 80)));
      return this.execute(command.data);
    });
  }

  /** Runs one command; commands run one after another, in arrival order. */
  run(command: LegacyCommand): Promise<string> {
    return this.enqueue(() => this.execute(command));
  }

  private enqueue(task: () => Promise<string>): Promise<string> {
    const next = this.queue.then(task);
    this.queue = next.catch(() => undefined);
    return next;
  }

  private say(line: string): string {
    this.print(line);
    return line;
  }

  private async execute(command: LegacyCommand): Promise<string> {
    switch (command) {
      case 'start':
        return this.start();
      case 'stop':
        return this.stop();
      case 'update':
        return this.update();
      case 'install':
        return this.install();
      case 'done':
        return this.say(LEGACY_LINES.done);
      case 'exit': {
        const line = this.say(LEGACY_LINES.exiting);
        setImmediate(() => this.options.onExit());
        return line;
      }
    }
  }

  /** Printed once subscribed, as the original did. */
  announce(topic: string): void {
    this.print(LEGACY_LINES.connected(topic));
  }

  get running(): boolean {
    return this.child !== undefined;
  }

  private start(): string {
    if (this.child?.pid !== undefined) return this.say(LEGACY_LINES.alreadyRunning(this.child.pid));
    const argv = this.options.program;
    if (!argv || argv.length === 0) return this.say(LEGACY_LINES.noProgram);
    this.print(LEGACY_LINES.starting);
    const [cmd, ...args] = argv as [string, ...string[]];
    let child: ChildProcess;
    try {
      child = spawn(cmd, args, { stdio: ['ignore', 'inherit', 'inherit'] });
    } catch (error) {
      return this.say(LEGACY_LINES.startFailed((error as Error).message));
    }
    if (child.pid === undefined) {
      // spawn reports ENOENT asynchronously; without a pid the program never ran
      child.on('error', () => undefined);
      return this.say(LEGACY_LINES.startFailed(`cannot run "${cmd}"; check legacyProgram`));
    }
    this.child = child;
    this.exited = new Promise((resolve) => {
      child.on('exit', (code, signal) => {
        if (this.child === child) this.child = undefined;
        this.print(LEGACY_LINES.exited(code, signal));
        this.options.logger.info({ pid: child.pid, code, signal }, 'legacy program exited');
        resolve();
      });
    });
    child.on('error', (error) => this.options.logger.error({ err: error }, 'legacy program error'));
    this.options.logger.info({ pid: child.pid, program: cmd }, 'legacy program started');
    return this.say(LEGACY_LINES.started(child.pid));
  }

  private async stop(): Promise<string> {
    const child = this.child;
    if (!child || !this.exited) return this.say(LEGACY_LINES.notRunning);
    this.print(LEGACY_LINES.stopping);
    child.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const inTime = await Promise.race([
      this.exited.then(() => true),
      new Promise<boolean>((r) => {
        timer = setTimeout(() => r(false), this.options.stopTimeoutMs);
      }),
    ]);
    clearTimeout(timer);
    if (inTime) return this.say(LEGACY_LINES.stopped);
    child.kill('SIGKILL');
    await this.exited;
    return this.say(LEGACY_LINES.killed);
  }

  /** Activates the highest installed version of each model (what the host assigned last). */
  private async update(): Promise<string> {
    this.print(LEGACY_LINES.updating);
    const models = this.options.models.list();
    if (models.length === 0 || models.every((m) => m.versions.length === 0)) return this.say(LEGACY_LINES.noModel);
    const changed: string[] = [];
    const current: string[] = [];
    try {
      for (const model of models) {
        const newest = Math.max(...model.versions);
        if (!Number.isFinite(newest)) continue;
        if (model.active === newest) {
          current.push(`${model.name}@${newest}`);
          continue;
        }
        await this.options.models.activate(model.name, newest);
        changed.push(`${model.name}@${newest}`);
      }
    } catch (error) {
      return this.say(LEGACY_LINES.updateFailed((error as Error).message));
    }
    return this.say(changed.length > 0 ? LEGACY_LINES.updated(changed.join(', ')) : LEGACY_LINES.upToDate(current.join(', ')));
  }

  private async install(): Promise<string> {
    const argv = this.options.install;
    if (!argv || argv.length === 0) return this.say(LEGACY_LINES.noInstall);
    this.print(LEGACY_LINES.installing);
    const [cmd, ...args] = argv as [string, ...string[]];
    const result = await new Promise<{ code: number | null; signal: string | null; error?: Error }>((resolve) => {
      const child = spawn(cmd, args, { stdio: ['ignore', 'inherit', 'inherit'] });
      child.on('error', (error) => resolve({ code: null, signal: null, error }));
      child.on('exit', (code, signal) => resolve({ code, signal }));
    });
    if (result.error) return this.say(LEGACY_LINES.installFailed(`cannot run "${cmd}" (${result.error.message}); check legacyInstall`));
    if (result.code !== 0) return this.say(LEGACY_LINES.installFailed(result.signal ? `killed by ${result.signal}` : `exit code ${result.code}`));
    return this.say(LEGACY_LINES.installed);
  }

  /** Stops a running program (agent shutdown). */
  async close(): Promise<void> {
    if (this.child) await this.stop();
  }
}
