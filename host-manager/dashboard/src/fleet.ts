/** The fleet view: every device with its state, facts and health; filter, sort, and problems that stand out. */
import { ago, esc, ms, percent } from './format.js';
import type { Store } from './store.js';
import type { DeviceView } from './types.js';
import type { View } from './view.js';

interface Row {
  d: DeviceView;
  id: string;
  state: string;
  attention: string;
  groups: string;
  labels: string;
  arch: string;
  runtime: string;
  models: string;
  cpu: number | null;
  mem: number | null;
  temp: number | null;
  rate: number | null;
  errorRate: number | null;
  p95: number | null;
  lastSeen: number;
}

export function runtimeText(info: DeviceView['info']): string {
  const r = info?.runtime;
  if (typeof r === 'string') return r;
  if (r && typeof r === 'object') return [r.name, r.version].filter(Boolean).join(' ');
  return info?.onnxruntime ? `onnxruntime ${info.onnxruntime.version}` : '';
}

function rowOf(store: Store, d: DeviceView): Row {
  const t = d.telemetry;
  const s = store.stats(d.id);
  const a = store.attention(d.id);
  return {
    d,
    id: d.id,
    state: d.online ? 'online' : 'offline',
    attention: a ? `${a.state} (${a.model})` : '',
    groups: d.groups.join(', '),
    labels: Object.entries(d.labels ?? {}).map(([k, v]) => `${k}=${v}`).join(' '),
    arch: d.info?.arch ?? '',
    runtime: runtimeText(d.info),
    models: (d.info?.models ?? []).map((m) => `${m.name}@${m.version}`).join(' '),
    cpu: t ? t.cpuPercent : null,
    mem: t && t.memoryTotalBytes ? t.memoryUsedBytes / t.memoryTotalBytes : null,
    temp: t?.temperatureC ?? null,
    rate: s.ratePerS,
    errorRate: s.errorRate,
    p95: s.p95Ms,
    lastSeen: d.lastSeen ? Date.parse(d.lastSeen) : 0,
  };
}

const COLUMNS: [keyof Row, string, string][] = [
  ['state', 'state', ''],
  ['id', 'device', ''],
  ['groups', 'groups', 'opt'],
  ['labels', 'labels', 'opt'],
  ['arch', 'arch', 'opt'],
  ['runtime', 'runtime', 'opt'],
  ['models', 'models', ''],
  ['cpu', 'cpu', ''],
  ['mem', 'memory', 'opt'],
  ['temp', 'temp', 'opt'],
  ['rate', 'infer/s', 'opt'],
  ['errorRate', 'errors', 'opt'],
  ['p95', 'p95', 'opt'],
  ['lastSeen', 'last seen', ''],
];

export function fleetView(store: Store): View {
  let root: HTMLElement;
  let sort: keyof Row = 'id';
  let asc = true;
  const body = (): HTMLElement => root.querySelector('#devices')!;
  const filterText = (): string => (root.querySelector<HTMLInputElement>('#filter')?.value ?? '').trim().toLowerCase();
  const show = (): string => root.querySelector<HTMLSelectElement>('#show')?.value ?? 'all';

  function cells(r: Row, now: number): string {
    const num = (v: number | null, f: (x: number) => string): string => (v === null ? '' : f(v));
    const badge = r.attention ? ` <span class="pill ${r.attention.startsWith('failed') ? 'failed' : 'rolled-back'}" title="in its latest rollout">${esc(r.attention)}</span>` : '';
    return [
      `<td class="state"><span class="pill ${r.state}">${r.state}</span></td>`,
      `<td><a href="#/device/${encodeURIComponent(r.id)}">${esc(r.id)}</a>${badge}</td>`,
      `<td class="opt">${esc(r.groups)}</td>`,
      `<td class="opt">${r.labels.split(' ').filter(Boolean).map((l) => `<span class="tag">${esc(l)}</span>`).join('')}</td>`,
      `<td class="opt">${esc(r.arch)}</td>`,
      `<td class="opt">${esc(r.runtime)}</td>`,
      `<td>${esc(r.models)}</td>`,
      `<td class="num" data-field="cpu">${num(r.cpu, (v) => `${v.toFixed(0)}%`)}</td>`,
      `<td class="num opt">${num(r.mem, (v) => percent(v))}</td>`,
      `<td class="num opt">${num(r.temp, (v) => `${v.toFixed(1)} °C`)}</td>`,
      `<td class="num opt">${num(r.rate, (v) => v.toFixed(1))}</td>`,
      `<td class="num opt${r.errorRate && r.errorRate > 0.05 ? ' bad-text' : ''}">${num(r.errorRate, (v) => percent(v, 1))}</td>`,
      `<td class="num opt">${num(r.p95, ms)}</td>`,
      `<td class="muted" data-ago="${r.lastSeen || ''}">${r.lastSeen ? ago(r.lastSeen, now) : 'never'}</td>`,
    ].join('');
  }

  function update(): void {
    if (!root) return;
    const now = Date.now();
    const text = filterText();
    const which = show();
    let rows = [...store.devices.values()].map((d) => rowOf(store, d));
    rows = rows.filter((r) => {
      if (which === 'online' && r.state !== 'online') return false;
      if (which === 'offline' && r.state !== 'offline') return false;
      if (which === 'attention' && r.state === 'online' && !r.attention && !(r.errorRate && r.errorRate > 0.05)) return false;
      return !text || [r.id, r.groups, r.labels, r.arch, r.runtime, r.models].some((v) => v.toLowerCase().includes(text));
    });
    rows.sort((a, b) => {
      const x = a[sort] ?? '';
      const y = b[sort] ?? '';
      const c = typeof x === 'number' && typeof y === 'number' ? x - y : String(x).localeCompare(String(y));
      return (asc ? c : -c) || a.id.localeCompare(b.id);
    });
    body().innerHTML = rows
      .map((r) => `<tr class="clickable ${r.state}" data-device="${esc(r.id)}" data-ts="${r.d.telemetry?.ts ?? ''}">${cells(r, now)}</tr>`)
      .join('');
    const all = [...store.devices.values()];
    root.querySelector('#count')!.textContent = `${all.length} devices, ${all.filter((d) => d.online).length} online${rows.length !== all.length ? `; ${rows.length} shown` : ''}`;
    for (const th of root.querySelectorAll<HTMLElement>('th[data-sort]')) {
      th.classList.toggle('sorted', th.dataset['sort'] === sort);
      th.classList.toggle('asc', th.dataset['sort'] === sort && asc);
    }
  }

  return {
    mount(el) {
      root = el;
      root.innerHTML = `<h2>Fleet <span id="count" class="muted"></span></h2>
        <div class="toolbar"><input id="filter" type="search" placeholder="filter: id, group, label, arch, model" aria-label="filter devices">
        <select id="show" aria-label="show"><option value="all">all devices</option><option value="online">online</option><option value="offline">offline</option><option value="attention">needing attention</option></select></div>
        <div class="scroll"><table><thead><tr>${COLUMNS.map(([k, label, cls]) => `<th data-sort="${k}" class="${cls}">${label}</th>`).join('')}</tr></thead><tbody id="devices"></tbody></table></div>`;
      root.querySelector('#filter')!.addEventListener('input', update);
      root.querySelector('#show')!.addEventListener('change', update);
      root.querySelector('thead')!.addEventListener('click', (ev) => {
        const key = (ev.target as HTMLElement).closest<HTMLElement>('th[data-sort]')?.dataset['sort'] as keyof Row | undefined;
        if (!key) return;
        asc = key === sort ? !asc : true;
        sort = key;
        update();
      });
      body().addEventListener('click', (ev) => {
        const tr = (ev.target as HTMLElement).closest<HTMLElement>('tr[data-device]');
        if (tr && !(ev.target as HTMLElement).closest('a')) location.hash = `#/device/${encodeURIComponent(tr.dataset['device']!)}`;
      });
      update();
    },
    update,
    unmount() {},
  };
}
