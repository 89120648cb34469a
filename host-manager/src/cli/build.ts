/**
 * `hostManager build --arch armv7|aarch64|x86_64`: the inference runtime image of toolchains/ (ONNX Runtime
 * cross-compiled at a pinned version, with edgefleet-infer) built by this machine's Docker engine and tagged
 * in the fleet's naming, ready for `hostManager image push`. Runs here only; the controller is not involved.
 */
import { existsSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Argv } from 'yargs';
import { BUILD_ARCHES, buildImage, planImageBuild } from '@edgefleet/toolchains';
import type { ImageBuildOptions } from '@edgefleet/toolchains';
import { UsageError } from './io.js';
import type { CliContext } from './io.js';

interface BuildArgs {
  arch: string;
  'ort-version'?: string;
  repository?: string;
  version?: string;
  jobs?: number;
  tag?: string[];
  context?: string;
  dockerfile?: string;
  target?: string;
}

/** Another build context: all of its folder is sent to the engine, and its Dockerfile must be there. */
function contextOf(dir: string, dockerfile: string): Pick<ImageBuildOptions, 'contextDir' | 'contextFiles'> {
  const contextDir = resolve(dir);
  if (!existsSync(join(contextDir, dockerfile))) throw new UsageError(`--context ${dir} has no ${dockerfile}: name a folder holding the Dockerfile (or give --dockerfile)`);
  return { contextDir, contextFiles: readdirSync(contextDir) };
}

function options(a: BuildArgs): ImageBuildOptions {
  return {
    arch: a.arch,
    ...(a['ort-version'] !== undefined ? { ortVersion: a['ort-version'] } : {}),
    ...(a.repository !== undefined ? { repository: a.repository } : {}),
    ...(a.version !== undefined ? { version: a.version } : {}),
    ...(a.jobs !== undefined ? { jobs: a.jobs } : {}),
    ...(a.tag?.length ? { extraTags: a.tag } : {}),
    // another context (a fork of toolchains/, or a Dockerfile of the operator's own) keeps the naming and the platform fix
    ...(a.context !== undefined ? contextOf(a.context, a.dockerfile ?? 'Dockerfile') : {}),
    ...(a.dockerfile !== undefined ? { dockerfile: a.dockerfile } : {}),
    ...(a.target !== undefined ? { target: a.target } : {}),
  };
}

export function buildCommands<T>(y: Argv<T>, ctx: CliContext): Argv<T> {
  return y.command(
    'build',
    "build the inference runtime image (ONNX Runtime cross-compiled, edgefleet-infer) for a board's architecture with this machine's Docker engine; needs internet (toolchains/README.md)",
    (yy) =>
      yy
        .option('arch', { type: 'string', demandOption: true, describe: `${BUILD_ARCHES.join(', ')} (arm64 and amd64 are accepted too)` })
        .option('ort-version', { type: 'string', describe: 'ONNX Runtime release to build (default: the Dockerfile\'s)' })
        .option('repository', { type: 'string', describe: 'image repository (default edgefleet/inference)' })
        .option('version', { type: 'string', describe: "the program version in the tag (default: edgefleet-infer's)" })
        .option('jobs', { type: 'number', describe: 'parallel compile jobs for ONNX Runtime (default: every core)' })
        .option('tag', { type: 'string', array: true, describe: 'more tags in the same repository' })
        .option('context', { type: 'string', describe: "another build context (default: toolchains/); its Dockerfile is given --arch's build arguments" })
        .option('dockerfile', { type: 'string', describe: 'the Dockerfile inside the context (default Dockerfile)' })
        .option('target', { type: 'string', describe: 'build up to this stage only' }),
    ctx.local<BuildArgs>(async (a) => {
      const plan = planImageBuild(options(a)); // bad options are refused before the engine is asked anything
      ctx.io.err(`building ${plan.reference} for ${plan.platform.os}/${plan.platform.architecture}${plan.platform.variant ? `/${plan.platform.variant}` : ''}`);
      const built = await buildImage(plan, { onProgress: (line) => ctx.io.err(line) });
      return {
        json: built,
        text: `${built.reference}: ${built.imageId}, ${built.sizeBytes} bytes, ${built.platform.architecture}${built.platform.variant ? `/${built.platform.variant}` : ''}; ship it with \`hostManager image push ${built.reference} --name <app> --spec <spec.json> --to <target>\``,
      };
    }),
  );
}
