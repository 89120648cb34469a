export { ARCHES, BUILD_ARCHES, archForNode, parseBuildArch } from './arch.js';
export type { ArchInfo, BuildArch, ImagePlatform } from './arch.js';
export {
  CONTEXT_FILES,
  DEFAULT_IMAGE_REPOSITORY,
  DEFAULT_ORT_VERSION,
  PROGRAM_VERSION,
  TOOLCHAINS_DIR,
  buildImage,
  planImageBuild,
  platformText,
  toolchainsPath,
} from './build.js';
export type { BuildImageDeps, ImageBuildOptions, ImageBuildPlan, ImageBuildResult } from './build.js';
export { rewriteSaveArchive, setImagePlatform, withPlatform } from './image-platform.js';
