/** What the tests read of the controller's API answers (the fields they look at). */

export interface DeviceView {
  id: string;
  online: boolean;
  labels?: Record<string, string>;
  info: { models: { name: string; version: number }[] } | null;
}

export interface RolloutView {
  id: string;
  status: string;
  waves: { label: string; state: string; devices: string[] }[];
  devices: Record<string, { state: string }>;
  timing: { windowOpensAt: string | null; etaAt: string | null };
}
