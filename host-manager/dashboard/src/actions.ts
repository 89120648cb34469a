/** The operator's actions, each through the HTTP API (operator token in a header) after a confirmation. */
import { call } from './api.js';
import { confirmAction, formDialog, value } from './dialogs.js';
import { esc } from './format.js';
import type { Store } from './store.js';
import type { DeviceView, RolloutView, VersionView } from './types.js';

const summary = (rows: [string, string][]): string => `<dl>${rows.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join('')}</dl>`;
const path = (id: string): string => encodeURIComponent(id);

export function abortRollout(r: { id: string; model: string; version: number }): Promise<boolean> {
  return confirmAction({
    title: `Abort rollout ${r.id}?`,
    body: summary([['rollout', `${r.model}@${r.version}`], ['what happens', 'It stops where it is: no more devices receive it. Devices already switched keep the new version until you roll back. You can resume it.']]),
    confirm: 'Abort rollout',
    danger: true,
    run: () => call('POST', `/api/rollouts/${path(r.id)}/abort`),
    done: `rollout ${r.id} aborted`,
  });
}

export function resumeRollout(r: { id: string; model: string; version: number }): Promise<boolean> {
  return confirmAction({
    title: `Resume rollout ${r.id}?`,
    body: summary([['rollout', `${r.model}@${r.version}`], ['what happens', 'It continues from where it stopped, with a fresh offline deadline.']]),
    confirm: 'Resume rollout',
    run: () => call('POST', `/api/rollouts/${path(r.id)}/resume`),
    done: `rollout ${r.id} resumed`,
  });
}

export function rollbackRollout(r: { id: string; model: string; version: number }, switched: number): Promise<boolean> {
  return confirmAction({
    title: `Roll back rollout ${r.id}?`,
    body: summary([['rollout', `${r.model}@${r.version}`], ['what happens', `It stops (if running) and switches the ${switched} device(s) it switched back to the version each ran before.`]]),
    confirm: 'Roll back',
    danger: true,
    run: () => call('POST', `/api/rollouts/${path(r.id)}/rollback`),
    done: `rollout ${r.id} rolled back`,
  });
}

export function rollbackDevice(device: string, model: string, version: number): Promise<boolean> {
  return confirmAction({
    title: `Roll back ${model} on ${device}?`,
    body: summary([['device', device], ['model', `${model}@${version}`], ['what happens', `${device} switches back to the version it ran before the rollout that gave it ${model}@${version}.`]]),
    confirm: 'Roll back device',
    danger: true,
    run: () => call('POST', `/api/devices/${path(device)}/rollback`, { model }),
    done: `${device}: ${model} rolled back`,
  });
}

/** `k=v` per line or comma → labels; a removed key becomes null (the API's merge patch). */
function labelPatch(text: string, before: Record<string, string>): Record<string, string | null> | string {
  const next: Record<string, string | null> = {};
  for (const term of text.split(/[\n,]/).map((t) => t.trim()).filter(Boolean)) {
    const m = /^([^=\s]+)\s*=\s*(\S*)$/.exec(term);
    if (!m) return `"${term}" is not KEY=VALUE`;
    next[m[1]!] = m[2]!;
  }
  for (const key of Object.keys(before)) if (!(key in next)) next[key] = null;
  return next;
}

export function editDevice(d: DeviceView): void {
  const labels = Object.entries(d.labels ?? {}).map(([k, v]) => `${k}=${v}`).join('\n');
  formDialog(
    `Groups and labels of ${d.id}`,
    `<label for="f-groups">Groups</label><input id="f-groups" name="groups" value="${esc(d.groups.join(', '))}" placeholder="lab, plant-1">
     <label for="f-labels">Labels</label><textarea id="f-labels" name="labels" rows="4" placeholder="site=plant-1">${esc(labels)}</textarea>
     <p class="muted full">Rollouts choose devices by groups and by labels (e.g. <code>site=plant-1</code>); the agent keeps subscribing to the groups it was started with until it restarts.</p>`,
    'Review',
    (form) => {
      const groups = value(form, 'groups').split(',').map((g) => g.trim()).filter(Boolean);
      const patch = labelPatch(value(form, 'labels'), d.labels ?? {});
      if (typeof patch === 'string') return patch;
      void confirmAction({
        title: `Change ${d.id}?`,
        body: summary([['groups', groups.join(', ') || '(none)'], ['labels', Object.entries(patch).filter(([, v]) => v !== null).map(([k, v]) => `${k}=${v}`).join(', ') || '(none)']]),
        confirm: 'Save',
        run: () => call('PATCH', `/api/devices/${path(d.id)}`, { groups, labels: patch }),
        done: `${d.id} updated`,
      });
      return undefined;
    },
  );
}

interface RolloutForm {
  model: string;
  version?: number;
  to: string;
}

function policyOf(form: HTMLFormElement): Record<string, unknown> | string {
  const policy: Record<string, unknown> = {};
  const num = (name: string, key: string, check: (v: number) => boolean, rule: string): string | undefined => {
    const text = value(form, name);
    if (text === '') return undefined;
    const v = Number(text);
    if (!Number.isFinite(v) || !check(v)) return `${rule} (got "${text}")`;
    policy[key] = v;
    return undefined;
  };
  const problem =
    num('canary', 'canary', (v) => Number.isInteger(v) && v >= 0, 'canary is a whole number of devices') ??
    num('soak', 'soakS', (v) => v >= 0, 'soak is seconds, 0 or more') ??
    num('maxErrorRate', 'maxErrorRate', (v) => v >= 0 && v <= 1, 'the error-rate ceiling is between 0 and 1') ??
    num('maxLatencyRatio', 'maxLatencyRatio', (v) => v >= 1, 'the p95 ratio is at least 1');
  if (problem) return problem;
  const waves = value(form, 'waves');
  if (waves) {
    const list = waves.split(',').map((w) => Number(w.trim().replace(/%$/, '')));
    if (list.some((w) => !Number.isFinite(w) || w <= 0 || w > 100)) return 'waves are percentages between 1 and 100, e.g. 10,50,100';
    policy['waves'] = list;
  }
  const window = value(form, 'window');
  if (window) {
    const m = /^(\d\d:\d\d)\s*-\s*(\d\d:\d\d)$/.exec(window);
    if (!m) return 'the maintenance window is HH:MM-HH:MM, e.g. 02:00-04:00';
    policy['window'] = { start: m[1], end: m[2], timeZone: value(form, 'tz') || 'UTC' };
  }
  return policy;
}

/** The "new rollout" form (pre-filled from a model version or a device), then its confirmation. */
export async function newRollout(store: Store, prefill: Partial<RolloutForm> = {}): Promise<void> {
  const versions = await call<VersionView[]>('GET', '/api/models');
  const names = [...new Set(versions.map((v) => v.name))].sort();
  const targets = ['all', ...new Set([...store.devices.values()].flatMap((d) => d.groups.map((g) => `group:${g}`))), ...store.devices.keys()];
  const tz = Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
  const chosen = prefill.model ?? names[0] ?? '';
  formDialog(
    'New rollout',
    `<label for="f-model">Model</label><select id="f-model" name="model">${names.map((n) => `<option${n === chosen ? ' selected' : ''}>${esc(n)}</option>`).join('')}</select>
     <label for="f-version">Version</label><input id="f-version" name="version" inputmode="numeric" placeholder="newest" value="${prefill.version ?? ''}">
     <label for="f-to">Target</label><input id="f-to" name="to" list="f-targets" required placeholder="group:lab, a device id, all, or arch=arm64,site=plant-1" value="${esc(prefill.to ?? '')}">
     <datalist id="f-targets">${targets.map((t) => `<option value="${esc(t)}">`).join('')}</datalist>
     <label for="f-canary">Canary devices</label><input id="f-canary" name="canary" inputmode="numeric" placeholder="1">
     <label for="f-waves">Waves (%)</label><input id="f-waves" name="waves" placeholder="10,50,100">
     <label for="f-soak">Soak (s)</label><input id="f-soak" name="soak" inputmode="numeric" placeholder="60">
     <label for="f-err">Max error rate</label><input id="f-err" name="maxErrorRate" inputmode="decimal" placeholder="0.05">
     <label for="f-lat">Max p95 ratio</label><input id="f-lat" name="maxLatencyRatio" inputmode="decimal" placeholder="1.5">
     <label for="f-window">Maintenance window</label><input id="f-window" name="window" placeholder="02:00-04:00 (optional)">
     <label for="f-tz">Time zone</label><input id="f-tz" name="tz" value="${esc(tz)}">`,
    'Review',
    (form) => {
      if (names.length === 0) return 'the registry has no models yet: add one with `hostManager models add <file.onnx>`';
      const model = value(form, 'model');
      const versionText = value(form, 'version');
      const version = versionText === '' ? undefined : Number(versionText);
      if (version !== undefined && !(Number.isInteger(version) && version > 0)) return `the version is a whole number (got "${versionText}")`;
      const to = value(form, 'to');
      if (!to) return 'say where it goes: group:NAME, a device id, all, or a selector such as arch=arm64';
      const policy = policyOf(form);
      if (typeof policy === 'string') return policy;
      const rows: [string, string][] = [['model', `${model}@${version ?? 'newest'}`], ['target', to]];
      for (const [k, v] of Object.entries(policy)) rows.push([k, typeof v === 'object' ? JSON.stringify(v) : String(v)]);
      void confirmAction({
        title: 'Start this rollout?',
        body: summary(rows),
        confirm: 'Start rollout',
        run: async () => {
          const r = await call<RolloutView>('POST', '/api/rollouts', { model, ...(version ? { version } : {}), to, policy });
          location.hash = `#/rollouts/${encodeURIComponent(r.id)}`;
        },
        done: 'rollout started',
      });
      return undefined;
    },
  );
}
