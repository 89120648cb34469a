/**
 * Image builds (`hostManager build --arch ...`): a pure plan (names, tags, labels, build
 * arguments, what the build context holds) and an executor that drives the Docker engine
 * through dockerode and gives the image the architecture it was built for.
 */
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import Docker from 'dockerode';
import tarFs from 'tar-fs';
import { FleetError } from '@edgefleet/protocol';
import { ARCHES, parseBuildArch } from './arch.js';
import type { BuildArch, ImagePlatform } from './arch.js';
import { followEngineStream, requireEngine } from './engine.js';
import { setImagePlatform } from './image-platform.js';

/** edgefleet-infer's version: project(VERSION) in native/CMakeLists.txt says the same (a test checks). */
export const PROGRAM_VERSION = '0.1.0';
/** The ONNX Runtime the Dockerfile builds unless told otherwise (its ORT_VERSION default; a test checks). */
export const DEFAULT_ORT_VERSION = '1.20.1';
export const DEFAULT_IMAGE_REPOSITORY = 'edgefleet/inference';
/** This package's folder: the Dockerfile's build context. */
export const TOOLCHAINS_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
/** What the Dockerfile reads from its context (the rest of this package stays out of it). */
export const CONTEXT_FILES = ['Dockerfile', 'cmake', 'native', 'scripts'];

export interface ImageBuildOptions {
  /** armv7 | aarch64 | x86_64 (or an alias such as arm64). */
  arch: string;
  ortVersion?: string;
  /** Image repository; default edgefleet/inference. */
  repository?: string;
  /** Program version in the tag; default PROGRAM_VERSION. */
  version?: string;
  /** Parallel compile jobs for ONNX Runtime (default: all cores of the build machine). */
  jobs?: number;
  extraTags?: string[];
  labels?: Record<string, string>;
  /** Another build context and Dockerfile (default: this package's). */
  contextDir?: string;
  contextFiles?: string[];
  dockerfile?: string;
  /** Build up to this stage only. */
  target?: string;
}

export interface ImageBuildPlan {
  arch: BuildArch;
  /** repository:tag, e.g. edgefleet/inference:0.1.0-ort1.20.1-armv7 */
  reference: string;
  /** All references the image gets (reference first). */
  tags: string[];
  platform: ImagePlatform;
  buildArgs: Record<string, string>;
  labels: Record<string, string>;
  contextDir: string;
  contextFiles: string[];
  dockerfile: string;
  target?: string;
}

export interface ImageBuildResult {
  reference: string;
  tags: string[];
  /** sha256:... of the image's configuration (what `docker images --no-trunc` shows). */
  imageId: string;
  platform: ImagePlatform;
  labels: Record<string, string>;
  sizeBytes: number;
}

// Docker's reference grammar, without the digest form: [host[:port]/]path[/path...]
const REPOSITORY = /^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?\/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;
const TAG_PART = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const VERSION = /^[0-9]+\.[0-9]+\.[0-9]+$/;

function invalid(message: string): never {
  throw new FleetError('invalid_params', message);
}

/** Pure: what to build and how to name it. Throws FleetError('invalid_params') on bad options. */
export function planImageBuild(options: ImageBuildOptions): ImageBuildPlan {
  const arch = parseBuildArch(options.arch);
  const ortVersion = options.ortVersion ?? DEFAULT_ORT_VERSION;
  if (!VERSION.test(ortVersion)) invalid(`ONNX Runtime version "${ortVersion}" is not a release number like ${DEFAULT_ORT_VERSION}`);
  const repository = options.repository ?? DEFAULT_IMAGE_REPOSITORY;
  if (!REPOSITORY.test(repository)) invalid(`image repository "${repository}" is not valid: use lower-case words joined by / . _ or -, e.g. ${DEFAULT_IMAGE_REPOSITORY}`);
  const version = options.version ?? PROGRAM_VERSION;
  if (!TAG_PART.test(version)) invalid(`version "${version}" cannot be part of an image tag: use letters, digits, '.', '_' or '-'`);
  for (const tag of options.extraTags ?? []) if (!TAG_PART.test(tag)) invalid(`extra tag "${tag}" is not a valid image tag`);
  if (options.jobs !== undefined && !(Number.isInteger(options.jobs) && options.jobs > 0)) invalid(`jobs must be a positive whole number, not ${options.jobs}`);

  const reference = `${repository}:${version}-ort${ortVersion}-${arch}`;
  const buildArgs: Record<string, string> = { ARCH: arch, ORT_VERSION: ortVersion };
  if (options.jobs !== undefined) buildArgs.ORT_JOBS = String(options.jobs);
  const plan: ImageBuildPlan = {
    arch,
    reference,
    tags: [reference, ...(options.extraTags ?? []).map((t) => `${repository}:${t}`)],
    platform: ARCHES[arch].platform,
    buildArgs,
    labels: {
      'org.opencontainers.image.title': 'edgefleet-infer',
      'org.opencontainers.image.version': version,
      'io.edgefleet.kind': 'inference-runtime',
      'io.edgefleet.arch': arch,
      'io.edgefleet.onnxruntime': ortVersion,
      ...options.labels,
    },
    contextDir: options.contextDir ?? TOOLCHAINS_DIR,
    contextFiles: options.contextFiles ?? CONTEXT_FILES,
    dockerfile: options.dockerfile ?? 'Dockerfile',
  };
  if (options.target !== undefined) plan.target = options.target;
  return plan;
}

export interface BuildImageDeps {
  /** Default: the engine DOCKER_HOST names, else /var/run/docker.sock. */
  docker?: Docker;
  /** Each line of the engine's build output, as it comes. */
  onProgress?: (line: string) => void;
}

/** Executes a plan: builds, tags, labels, and sets the image's platform to the plan's. */
export async function buildImage(plan: ImageBuildPlan, deps: BuildImageDeps = {}): Promise<ImageBuildResult> {
  const docker = deps.docker ?? new Docker();
  const onProgress = deps.onProgress ?? (() => undefined);
  const missing = plan.contextFiles.filter((f) => !existsSync(join(plan.contextDir, f)));
  if (missing.length > 0) throw new FleetError('invalid_params', `the build context ${plan.contextDir} lacks ${missing.join(', ')}: give contextDir and contextFiles that exist`);
  await requireEngine(docker);
  const recent: string[] = [];
  const remember = (line: string): void => {
    recent.push(line);
    if (recent.length > 20) recent.shift();
    onProgress(line);
  };
  const buildOptions: Docker.ImageBuildOptions = {
    t: plan.reference,
    dockerfile: plan.dockerfile,
    buildargs: plan.buildArgs,
    labels: plan.labels,
    rm: true,
    forcerm: true,
  };
  if (plan.target) buildOptions.target = plan.target;
  try {
    // Packed here rather than by dockerode, so that modes arrive unmasked (a world-writable /tmp, say).
    // (tar-fs reads `umask`; its type declarations leave it out.)
    const packOptions: tarFs.PackOptions & { umask: number } = { entries: plan.contextFiles, umask: 0 };
    const context = tarFs.pack(plan.contextDir, packOptions);
    const stream = await docker.buildImage(context, buildOptions);
    await followEngineStream(docker, stream, remember);
  } catch (err) {
    throw new FleetError('internal', `building ${plan.reference} failed: ${(err as Error).message}\n${recent.join('\n')}`);
  }
  const built = await docker.getImage(plan.reference).inspect();
  if (built.Architecture !== plan.platform.architecture || (built as { Variant?: string }).Variant !== plan.platform.variant) {
    // The classic builder records the engine's own platform for a FROM-scratch image.
    onProgress(`setting the image's platform to ${platformText(plan.platform)} (the engine recorded ${built.Os}/${built.Architecture})`);
    await setImagePlatform(docker, plan.reference, plan.platform, onProgress);
  }
  const image = await docker.getImage(plan.reference).inspect();
  for (const ref of plan.tags.slice(1)) {
    const colon = ref.lastIndexOf(':');
    await docker.getImage(image.Id).tag({ repo: ref.slice(0, colon), tag: ref.slice(colon + 1) });
  }
  return {
    reference: plan.reference,
    tags: plan.tags,
    imageId: image.Id,
    platform: plan.platform,
    labels: image.Config.Labels ?? {},
    sizeBytes: image.Size,
  };
}

export function platformText(p: ImagePlatform): string {
  return [p.os, p.architecture, p.variant].filter(Boolean).join('/');
}

/** Absolute path of a file of this package (for callers that show or check the Dockerfile). */
export function toolchainsPath(...parts: string[]): string {
  return join(TOOLCHAINS_DIR, ...parts);
}
