/**
 * What can be checked in a Dockerfile without building it: stages reference only earlier
 * stages (FROM and COPY --from), COPY from the context names only what the driver sends,
 * RUN uses the build args its stage declares, and nothing needs BuildKit (the engine API
 * drives Docker 20.10's classic builder). Returns the stage names and the faults found.
 */
import { DockerfileParser } from 'dockerfile-ast';
import type { Arg, Copy, From } from 'dockerfile-ast';

export function checkDockerfile(text: string, contextFiles: string[], buildArgs: string[]): { stages: string[]; faults: string[] } {
  const dockerfile = DockerfileParser.parse(text);
  const initialArgs = new Set(dockerfile.getInitialARGs().map((a) => a.getProperty()?.getName()));
  const stages: string[] = [];
  let stageArgs = new Set<string | undefined>();
  const faults: string[] = [];
  const lines = text.split('\n');
  for (const instruction of dockerfile.getInstructions()) {
    const range = instruction.getRange();
    const line = range.start.line + 1;
    // The instruction as written, flags included (the parser's argument text leaves them out).
    const written = lines.slice(range.start.line, range.end.line + 1).join('\n');
    switch (instruction.getKeyword()) {
      case 'FROM': {
        const from = instruction as From;
        const base = from.getImageName() ?? '';
        const byArg = /^\$\{(\w+)\}$/.exec(base);
        // A base is an earlier stage, scratch, or an image named by a build arg declared before the first FROM.
        if (!stages.includes(base) && base !== 'scratch' && !(byArg && initialArgs.has(byArg[1]))) faults.push(`line ${line}: FROM ${base} is no earlier stage`);
        stages.push(from.getBuildStage() ?? '');
        stageArgs = new Set();
        break;
      }
      case 'ARG':
        stageArgs.add((instruction as Arg).getProperty()?.getName());
        break;
      case 'COPY': {
        const fromStage = (instruction as Copy).getFromFlag()?.getValue();
        const source = instruction.getArguments()[0]?.getValue().replace(/\/$/, '') ?? '';
        if (fromStage && !stages.slice(0, -1).includes(fromStage)) faults.push(`line ${line}: COPY --from=${fromStage} is no earlier stage`);
        if (!fromStage && !contextFiles.includes(source)) faults.push(`line ${line}: COPY ${source} is not in what the driver sends`);
        break;
      }
      case 'RUN':
        for (const arg of buildArgs) {
          if (new RegExp(`\\$\\{?${arg}\\b`).test(written) && !stageArgs.has(arg)) faults.push(`line ${line}: RUN uses $${arg} but stage ${stages.at(-1)} declares no ARG ${arg}`);
        }
        if (/--mount=|<<-?[A-Z"']/.test(written)) faults.push(`line ${line}: RUN --mount and heredocs need BuildKit`);
        break;
    }
  }
  if (/^# *syntax=/m.test(text)) faults.push('a # syntax= directive asks for BuildKit');
  return { stages, faults };
}
