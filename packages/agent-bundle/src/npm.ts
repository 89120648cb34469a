/** Running npm (the ordinary client, against the configured registry and its cache) for the builder. */
import { spawn } from 'node:child_process';
import { homedir } from 'node:os';
import { join } from 'node:path';

/** Where downloads and prepared dependency trees are kept between builds (outside any checkout). */
export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.EDGEFLEET_CACHE ?? join(env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'edgefleet');
}

/**
 * The environment for a child npm: without the npm_* variables of an `npm run` this build may be
 * running under (they would point npm at the parent's project), but with its cache and registry.
 */
function npmEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^npm_/i.test(k) && !/^npm_config_(cache|registry|userconfig)$/i.test(k)) continue;
    env[k] = v;
  }
  return { ...env, ...extra };
}

export function runNpm(args: string[], cwd: string, extraEnv: Record<string, string> = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('npm', args, { cwd, env: npmEnv(extraEnv), stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.on('error', (error) => reject(new Error(`npm could not be started (${error.message}); the bundle builder needs npm on PATH`)));
    child.on('exit', (code) => {
      if (code === 0) resolve(out);
      else reject(new Error(`npm ${args.join(' ')} failed (exit ${code}) in ${cwd}: ${err.trim().split('\n').slice(-8).join('\n')}`));
    });
  });
}
