/**
 * Who answers an inference request for a name, on every entry point (MQTT `infer`, the HTTP APIs): a model
 * of the model service first; otherwise an image app that serves inference under that name (its container
 * speaks the Open Inference Protocol; containers/traffic.ts forwards to it).
 */
import type { InferAnswer, InferParams } from './models/infer.js';
import type { ModelService } from './models/service.js';

export interface Answerer {
  answer(params: InferParams, binary?: Uint8Array): Promise<InferAnswer>;
}

/** Image apps that serve inference (the container service). */
export interface InferenceApps extends Answerer {
  serves(name: string): boolean;
}

/** The image app for `name` when no active model has that name; undefined means the model service answers. */
export function appFor(name: string, models: ModelService | undefined, apps: InferenceApps | undefined): Answerer | undefined {
  const isModel = models?.active().some((m) => m.name === name) ?? false;
  return !isModel && apps?.serves(name) ? apps : undefined;
}
