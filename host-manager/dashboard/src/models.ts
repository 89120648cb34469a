/** The models view: every model and version with its lineage, size, inputs and outputs, check policy, and where it runs. */
import { ApiError, call } from './api.js';
import { newRollout } from './actions.js';
import { ago, bytes, esc } from './format.js';
import type { Store } from './store.js';
import type { VersionView } from './types.js';
import type { View } from './view.js';

const tensors = (list: VersionView['inputs']): string =>
  list.map((t) => `<div><code>${esc(t.name)}</code> ${esc(t.dtype)}[${t.shape.map((d) => esc(d ?? '?')).join(', ')}]</div>`).join('');

function lineage(l: VersionView['lineage']): string {
  if (!l) return '<span class="muted">none</span>';
  const parts: string[] = [];
  if (l.dataset) parts.push(`dataset ${esc(l.dataset)}`);
  if (l.gitCommit) parts.push(`commit <code>${esc(l.gitCommit.slice(0, 12))}</code>`);
  if (l.metrics) parts.push(Object.entries(l.metrics).map(([k, v]) => `${esc(k)} ${esc(v)}`).join(', '));
  if (l.notes) parts.push(esc(l.notes));
  return parts.join('<br>') || '<span class="muted">none</span>';
}

export function modelsView(store: Store): View {
  let root: HTMLElement;
  let versions: VersionView[] = [];
  let problem = '';

  function runsOn(name: string, version: number): string[] {
    return [...store.devices.values()].filter((d) => d.info?.models.some((m) => m.name === name && m.version === version)).map((d) => d.id);
  }

  let seenChanges = store.registryChanges;

  function update(): void {
    if (!root) return;
    if (store.registryChanges !== seenChanges) {
      seenChanges = store.registryChanges;
      void load();
    }
    const body = root.querySelector('#models')!;
    if (problem) {
      body.innerHTML = `<p class="err">${esc(problem)}</p>`;
      return;
    }
    const names = [...new Set(versions.map((v) => v.name))].sort();
    if (names.length === 0) {
      body.innerHTML = '<p class="muted">No models yet. Add one with <code>hostManager models add model.onnx --name NAME</code>.</p>';
      return;
    }
    body.innerHTML = names
      .map((name) => {
        const list = versions.filter((v) => v.name === name).sort((a, b) => b.version - a.version);
        const rows = list
          .map((v) => {
            const on = runsOn(name, v.version);
            return `<tr data-model="${esc(name)}" data-version="${v.version}"><td><strong>${v.version}</strong></td><td class="muted">${ago(v.addedAt)}</td><td class="num">${bytes(v.length)}</td>
              <td class="opt"><code title="${esc(v.sha256)}">${esc(v.sha256.slice(0, 12))}</code></td><td class="opt">${v.opset ?? ''}</td>
              <td class="opt">${tensors(v.inputs)}</td><td class="opt">${tensors(v.outputs)}</td><td class="wrap opt">${lineage(v.lineage)}</td>
              <td class="wrap opt">${v.check === undefined || v.check === null ? '<span class="muted">none</span>' : `<code>${esc(JSON.stringify(v.check))}</code>`}</td>
              <td class="wrap">${on.length ? on.map((d) => `<a class="tag" href="#/device/${encodeURIComponent(d)}">${esc(d)}</a>`).join('') : '<span class="muted">nowhere</span>'}</td>
              <td><button type="button" data-act="deploy">Deploy…</button></td></tr>`;
          })
          .join('');
        return `<div class="card"><h3>${esc(name)}</h3><div class="scroll"><table><thead><tr><th>version</th><th>added</th><th class="num">size</th><th class="opt">sha256</th><th class="opt">opset</th><th class="opt">inputs</th><th class="opt">outputs</th><th class="opt">lineage</th><th class="opt">check</th><th>runs on</th><th></th></tr></thead><tbody>${rows}</tbody></table></div></div>`;
      })
      .join('');
  }

  async function load(): Promise<void> {
    try {
      versions = await call<VersionView[]>('GET', '/api/models');
      problem = '';
    } catch (error) {
      problem = error instanceof ApiError ? error.message : String(error);
    }
    update();
  }

  return {
    mount(el) {
      root = el;
      root.innerHTML = '<h2>Models</h2><div id="models"><p class="muted">loading…</p></div>';
      root.addEventListener('click', (ev) => {
        const tr = (ev.target as HTMLElement).closest<HTMLElement>('[data-act=deploy]')?.closest<HTMLElement>('tr[data-model]');
        if (tr) void newRollout(store, { model: tr.dataset['model']!, version: Number(tr.dataset['version']) });
      });
      void load();
    },
    update,
    unmount() {},
  };
}
