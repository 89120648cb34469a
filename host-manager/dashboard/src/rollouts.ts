/**
 * The rollouts view: each rollout with its waves (a bar each), per-device progress (transfer bar,
 * state, short reason with the full one on demand), gate results with the numbers they compared,
 * the soak countdown and ETA; abort, resume and roll back from here.
 */
import { abortRollout, resumeRollout, rollbackRollout } from './actions.js';
import { ago, duration, esc, ms, percent, short } from './format.js';
import type { Store } from './store.js';
import type { RolloutSummary, RolloutView } from './types.js';
import type { View } from './view.js';

type Wave = RolloutView['waves'][number];
type Gate = NonNullable<Wave['gate']>;
const FINAL = new Set(['switched', 'failed', 'rolled-back', 'skipped']);

// the width is set from data-pct after rendering (sizeBars): the page's CSP allows no inline style attributes
const bar = (done: number, total: number, cls = ''): string => `<div class="bar ${cls}" role="progressbar" aria-valuemin="0" aria-valuemax="${total}" aria-valuenow="${done}"><span data-pct="${total ? Math.round((100 * done) / total) : 0}"></span></div>`;

export function sizeBars(root: ParentNode): void {
  for (const el of root.querySelectorAll<HTMLElement>('[data-pct]')) el.style.width = `${el.dataset['pct']}%`;
}

/** A countdown the page ticks every second (data-until). */
const until = (iso: string, prefix: string): string => `<span data-until="${Date.parse(iso)}" data-prefix="${esc(prefix)}">${esc(prefix)}${duration((Date.parse(iso) - Date.now()) / 1000)}</span>`;

function gateText(g: Gate): string {
  const row = (name: string, h: Gate['before']): string => `<tr><th>${name}</th><td class="num">${h.requests}</td><td class="num">${h.errors}</td><td class="num">${percent(h.errorRate, 1)}</td><td class="num">${ms(h.p95Ms)}</td></tr>`;
  return `<div class="gate"><span class="pill ${g.pass ? 'passed' : 'failed'}">gate ${g.pass ? 'passed' : 'failed'}</span>
    installed ${g.install.switched}, failed ${g.install.failed}, offline ${g.install.waiting}
    <table><thead><tr><th></th><th class="num">requests</th><th class="num">errors</th><th class="num">error rate</th><th class="num">p95</th></tr></thead><tbody>${row('before', g.before)}${row('after', g.after)}</tbody></table>
    <ul>${g.reasons.map((r) => `<li class="${(g.failures ?? []).includes(r) ? 'bad-text' : 'muted'}">${esc(r)}</li>`).join('')}</ul></div>`;
}

function deviceRows(r: RolloutView, w: Wave): string {
  return w.devices
    .map((id) => {
      const d = Object.hasOwn(r.devices, id) ? r.devices[id] : undefined;
      if (!d) return '';
      const p = Object.hasOwn(r.progress, id) ? r.progress[id] : undefined;
      const transfer = d.state === 'delivering' && p ? `${bar(p.received, p.total)}<span class="muted">${p.received}/${p.total} chunks</span>` : '';
      const reason = d.error ? `<details class="reason"><summary>${esc(short(`${d.error.code}: ${d.error.message}`, 70))}</summary><pre>${esc(`${d.error.code}: ${d.error.message}`)}</pre></details>` : '';
      return `<tr data-device="${esc(id)}"><td><a href="#/device/${encodeURIComponent(id)}">${esc(id)}</a></td><td><span class="pill ${esc(d.state)}">${esc(d.state)}</span></td><td>${transfer}</td><td class="wrap">${reason}</td></tr>`;
    })
    .join('');
}

function waveBlock(r: RolloutView, w: Wave): string {
  const done = w.devices.filter((id) => FINAL.has((Object.hasOwn(r.devices, id) ? r.devices[id]?.state : undefined) ?? '')).length;
  const failed = w.devices.some((id) => r.devices[id]?.state === 'failed');
  const soaking = w.state === 'soaking' && w.soakUntil;
  const state = soaking && r.status === 'running' ? until(w.soakUntil!, 'soaking, left ') : soaking ? `soaking when it stopped (${esc(r.status)})` : esc(w.state);
  return `<div class="wave" data-wave="${w.index}"><div class="wave-head"><strong>wave ${w.index} (${esc(w.label)})</strong><span class="pill ${esc(w.state)}">${state}</span>${bar(done, w.devices.length, failed ? 'bad' : w.state === 'passed' ? 'ok' : '')}<span class="muted">${done}/${w.devices.length} devices</span></div>
    ${w.gate ? gateText(w.gate) : ''}
    ${w.devices.length ? `<div class="scroll"><table class="devices"><tbody>${deviceRows(r, w)}</tbody></table></div>` : '<p class="muted">no devices (devices that match the target when this wave starts join it)</p>'}</div>`;
}

function card(s: RolloutSummary, r: RolloutView | undefined, open: boolean): string {
  const switched = s.devices.switched;
  const actions = [
    s.status === 'running' ? '<button type="button" class="danger" data-act="abort">Abort</button>' : '',
    s.status === 'aborted' ? '<button type="button" data-act="resume">Resume</button>' : '',
    switched > 0 ? '<button type="button" class="danger" data-act="rollback">Roll back</button>' : '',
  ].join('');
  const timing = s.timing;
  const eta = s.status === 'running' && timing?.etaAt ? `<span class="muted">${timing.windowOpensAt ? `${until(timing.windowOpensAt, 'waiting for the maintenance window: opens in ')}; ` : ''}${until(timing.etaAt, timing.etaLowerBound ? 'ETA ≥ ' : 'ETA ')}</span>` : '';
  const reason = s.reason ? `<details class="${s.status === 'failed' ? 'reason' : ''}"><summary>${esc(short(s.reason, 110))}</summary><pre>${esc(s.reason)}</pre></details>` : '';
  const waves = open && r ? r.waves.map((w) => waveBlock(r, w)).join('') : `<div class="wave-head">${s.waves.map((w) => `<span class="pill ${esc(w.state)}">${esc(w.label)}: ${esc(w.state)}</span>`).join(' ')}</div>`;
  return `<article class="card rollout" data-rollout="${esc(s.id)}"><header class="r"><h3><a href="#/rollouts/${encodeURIComponent(s.id)}">${esc(s.model)}@${s.version}</a> → ${esc(s.target)}</h3>
    <span class="pill ${esc(s.status)}" data-field="status">${esc(s.status)}</span><span class="muted">${esc(s.id)}, ${ago(s.createdAt)}</span>
    <span>${switched}/${s.devices.total} switched${s.devices.failed ? `, <span class="bad-text">${s.devices.failed} failed</span>` : ''}${s.devices.rolledBack ? `, ${s.devices.rolledBack} rolled back` : ''}</span>${eta}
    <span class="actions">${actions}</span></header>${reason}${waves}</article>`;
}

export function rolloutsView(store: Store, selected: string | undefined): View {
  let root: HTMLElement;
  let timer: ReturnType<typeof setInterval> | undefined;
  const isOpen = (s: RolloutSummary): boolean => s.id === selected || (selected === undefined && s.status === 'running');

  function update(): void {
    if (!root) return;
    const list = [...store.rollouts.values()].sort((a, b) => (a.createdAt < b.createdAt ? 1 : -1));
    root.querySelector('#rollouts')!.innerHTML = list.length
      ? list.map((s) => card(s, store.details.get(s.id), isOpen(s))).join('')
      : '<p class="muted">No rollouts yet. Start one with "New rollout" above, or <code>hostManager deploy MODEL --to group:NAME</code>.</p>';
    sizeBars(root);
  }

  function poll(): void {
    const wanted = [...store.rollouts.values()].filter((s) => isOpen(s) && (s.status === 'running' || !store.details.has(s.id)));
    if (wanted.length) void store.refreshDetails(wanted);
  }

  return {
    mount(el) {
      root = el;
      root.innerHTML = `<h2>Rollouts</h2><div id="rollouts"></div>`;
      root.addEventListener('click', (ev) => {
        const b = (ev.target as HTMLElement).closest<HTMLElement>('[data-act]');
        const id = b?.closest<HTMLElement>('[data-rollout]')?.dataset['rollout'];
        const s = id ? store.rollouts.get(id) : undefined;
        if (!b || !s) return;
        const act = b.dataset['act'];
        const done = (): void => void store.refreshDetails([s]);
        if (act === 'abort') void abortRollout(s).then(done);
        else if (act === 'resume') void resumeRollout(s).then(done);
        else if (act === 'rollback') void rollbackRollout(s, s.devices.switched).then(done);
      });
      poll();
      timer = setInterval(poll, 1000);
      update();
    },
    update,
    unmount() {
      clearInterval(timer);
    },
  };
}
