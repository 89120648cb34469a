/** One device: its facts, recent telemetry as charts, models and containers on it, events, log tail, and its actions. */
import { ApiError, call } from './api.js';
import { editDevice, newRollout, rollbackDevice } from './actions.js';
import { lineChart } from './charts.js';
import type { Chart } from './charts.js';
import { ago, bytes, esc, ms } from './format.js';
import { runtimeText } from './fleet.js';
import type { Store } from './store.js';
import type { ContainerView, DeviceView, VitalsSeries } from './types.js';
import type { View } from './view.js';

/** Points kept per chart while the page is open (the controller's history plus live samples). */
const MAX_POINTS = 720;

type Sample = NonNullable<DeviceView['telemetry']>;

function appendSample(series: VitalsSeries, s: Sample, at: number): void {
  series.at.push(at);
  series.cpuPercent.push(s.cpuPercent);
  series.memoryPercent.push(s.memoryTotalBytes ? (100 * s.memoryUsedBytes) / s.memoryTotalBytes : 0);
  series.temperatureC.push(s.temperatureC);
  const n = series.at.length;
  for (const key of Object.keys(s.models)) {
    // a model seen for the first time: empty before now, so its line starts where it started
    series.models[key] ??= { requests: new Array<number | null>(n - 1).fill(null), errors: new Array<number | null>(n - 1).fill(null), p95Ms: new Array<number | null>(n - 1).fill(null) };
  }
  for (const [key, m] of Object.entries(series.models)) {
    const h = Object.hasOwn(s.models, key) ? s.models[key] : undefined;
    m.requests.push(h ? h.requests : null);
    m.errors.push(h ? h.errors : null);
    m.p95Ms.push(h ? h.p95Ms : null);
  }
  if (n > MAX_POINTS) {
    for (const list of [series.at, series.cpuPercent, series.memoryPercent, series.temperatureC]) list.shift();
    for (const m of Object.values(series.models)) for (const list of [m.requests, m.errors, m.p95Ms]) list.shift();
  }
}

/** Requests per interval → requests per second, from the sample times. */
function rates(at: number[], counts: (number | null)[]): (number | null)[] {
  return counts.map((c, i) => (c === null || i === 0 ? null : c / Math.max(0.001, (at[i]! - at[i - 1]!) / 1000)));
}

function containersTable(list: ContainerView[]): string {
  if (list.length === 0) return '<p class="muted">No containers of the fleet on this device.</p>';
  return `<div class="scroll"><table><thead><tr><th>app</th><th>role</th><th>state</th><th>health</th><th class="opt">restarts</th><th class="opt">started</th><th class="opt">container</th></tr></thead><tbody>${list
    .map((c) => `<tr><td>${esc(c.app)}@${esc(c.version)}</td><td>${esc(c.role ?? '')}</td><td><span class="pill ${c.running ? 'running-c' : esc(c.state)}">${esc(c.state)}</span></td><td><span class="pill ${esc(c.health ?? 'none')}">${esc(c.health ?? 'none')}</span></td><td class="num opt">${esc(c.restarts ?? '')}</td><td class="opt muted">${c.startedAt ? ago(c.startedAt) : ''}</td><td class="opt"><code>${esc(c.name)}</code></td></tr>`)
    .join('')}</tbody></table></div>`;
}

export function deviceView(store: Store, id: string): View {
  let root: HTMLElement;
  const charts: Record<string, Chart> = {};
  let series: VitalsSeries = { at: [], cpuPercent: [], memoryPercent: [], temperatureC: [], models: {} };
  let offTelemetry: () => void = () => undefined;
  let audit: { ts: string; actor: string; action: string; target?: string; result: string }[] = [];
  /** What the device said about itself before the page listened (GET /api/reports): its word, each line marked so. */
  let reports: { ts: string; event: string; text: string }[] = [];

  function draw(): void {
    const x = series.at;
    charts['cpu']?.set(x, [{ label: 'CPU', values: series.cpuPercent }]);
    charts['mem']?.set(x, [{ label: 'memory', values: series.memoryPercent }]);
    charts['temp']?.set(series.temperatureC.some((t) => t !== null) ? x : [], [{ label: 'temperature', values: series.temperatureC }]);
    const models = Object.entries(series.models);
    charts['rate']?.set(models.length ? x : [], models.map(([k, m]) => ({ label: k, values: rates(x, m.requests) })));
    charts['errors']?.set(models.length ? x : [], models.map(([k, m]) => ({ label: k, values: m.errors })));
    charts['p95']?.set(models.length ? x : [], models.map(([k, m]) => ({ label: k, values: m.p95Ms })));
  }

  function header(d: DeviceView): string {
    const info = d.info;
    const fact = (k: string, v: unknown): string => (v === undefined || v === null || v === '' ? '' : `<div><span>${k}</span>${esc(v)}</div>`);
    return `<h2><a href="#/fleet">Fleet</a> / ${esc(d.id)} <span class="pill ${d.online ? 'online' : 'offline'}">${d.online ? 'online' : 'offline'}</span></h2>
      <div class="facts">${fact('groups', d.groups.join(', ') || '(none)')}${fact('labels', Object.entries(d.labels ?? {}).map(([k, v]) => `${k}=${v}`).join(', ') || '(none)')}
      ${fact('arch', info?.arch)}${fact('runtime', runtimeText(info))}${fact('host', info?.hostname)}${fact('agent', info?.agentVersion)}${fact('memory', bytes(info?.memoryBytes))}
      ${fact('last seen', d.lastSeen ? ago(d.lastSeen) : 'never')}${d.online ? '' : fact('offline because', d.offlineReason)}</div>
      <div class="toolbar"><button type="button" data-act="edit">Edit groups and labels</button><button type="button" data-act="deploy">Deploy to this device</button></div>`;
  }

  function modelsTable(d: DeviceView): string {
    const models = d.info?.models ?? [];
    if (models.length === 0) return '<p class="muted">No model is active on this device.</p>';
    const health = d.telemetry?.models ?? {};
    return `<div class="scroll"><table><thead><tr><th>model</th><th>version</th><th class="num">requests</th><th class="num">errors</th><th class="num">p95</th><th></th></tr></thead><tbody>${models
      .map((m) => {
        const key = `${m.name}@${m.version}`;
        const h = Object.hasOwn(health, key) ? health[key] : undefined;
        return `<tr><td>${esc(m.name)}</td><td>${esc(m.version)}</td><td class="num">${h?.requests ?? ''}</td><td class="num${h && h.errors ? ' bad-text' : ''}">${h?.errors ?? ''}</td><td class="num">${ms(h?.p95Ms)}</td>
          <td><button type="button" class="danger" data-act="rollback" data-model="${esc(m.name)}" data-version="${m.version}">Roll back</button></td></tr>`;
      })
      .join('')}</tbody></table></div><p class="muted">Counts are for the latest telemetry interval.</p>`;
  }

  function eventsList(): string {
    const live = (store.events.get(id) ?? []).map((e) => ({ ts: e.ts, text: e.text, kind: e.kind }));
    const fromAudit = audit.map((a) => ({ ts: Date.parse(a.ts), text: `${a.action}${a.target ? ` ${a.target}` : ''} (${a.actor})`, kind: a.result === 'ok' ? 'ok' : 'bad' }));
    // a report the feed also brought is shown once
    const seen = new Set(live.map((e) => e.text));
    const fromReports = reports.filter((r) => !seen.has(r.text)).map((r) => ({ ts: Date.parse(r.ts), text: r.text, kind: r.event.endsWith('.failed') ? 'bad' : 'info' }));
    const all = [...live, ...fromAudit, ...fromReports].sort((a, b) => b.ts - a.ts).slice(0, 40);
    if (all.length === 0) return '<p class="muted">No events yet.</p>';
    return `<ul class="events">${all.map((e) => `<li class="${e.kind === 'bad' ? 'bad-text' : ''}"><time>${new Date(e.ts).toLocaleTimeString()}</time>${esc(e.text)}</li>`).join('')}</ul>`;
  }

  async function loadLog(): Promise<void> {
    const pre = root.querySelector<HTMLElement>('#log');
    if (!pre) return;
    try {
      const r = await call<{ lines: string[] }>('GET', `/api/devices/${encodeURIComponent(id)}/logs?lines=40`);
      pre.textContent = r.lines.map(logLine).join('\n') || '(empty)';
    } catch (error) {
      pre.textContent = `the log cannot be read now: ${error instanceof ApiError ? error.message : String(error)}`;
    }
  }

  function update(): void {
    if (!root) return;
    const d = store.devices.get(id);
    if (!d) {
      root.querySelector('#device-head')!.innerHTML = `<h2><a href="#/fleet">Fleet</a> / ${esc(id)}</h2><p class="err">No device ${esc(id)} in the fleet.</p>`;
      return;
    }
    root.querySelector('#device-head')!.innerHTML = header(d);
    root.querySelector('#device-models')!.innerHTML = modelsTable(d);
    root.querySelector('#device-containers')!.innerHTML = containersTable(d.info?.containers ?? d.telemetry?.containers ?? []);
    root.querySelector('#device-events')!.innerHTML = eventsList();
  }

  async function load(): Promise<void> {
    try {
      series = await call<VitalsSeries>('GET', `/api/devices/${encodeURIComponent(id)}/telemetry?minutes=30`);
    } catch {
      series = { at: [], cpuPercent: [], memoryPercent: [], temperatureC: [], models: {} }; // charts fill from live samples
    }
    draw();
    try {
      // the controller's own records about this device (operator actions, delivery results); the device's word is in its reports
      const entries = await call<typeof audit>('GET', '/api/audit?limit=500');
      audit = entries.filter((a) => a.target === id || a.target?.startsWith(`${id}:`));
    } catch {
      audit = []; // the events list shows what the feed brings
    }
    try {
      reports = (await call<{ reports: typeof reports }>('GET', `/api/reports?device=${encodeURIComponent(id)}`)).reports;
    } catch {
      reports = []; // the events list shows what the feed brings
    }
    update();
  }

  return {
    mount(el) {
      root = el;
      root.innerHTML = `<div id="device-head"></div>
        <div class="charts">${['cpu', 'mem', 'temp', 'rate', 'errors', 'p95'].map((k) => `<div class="chart" id="chart-${k}"></div>`).join('')}</div>
        <div class="grid2"><section><h3>Models</h3><div id="device-models"></div><h3>Containers</h3><div id="device-containers"></div></section>
        <section><h3>Recent events</h3><div id="device-events"></div></section></div>
        <h3>Log <button type="button" data-act="log">Refresh</button></h3><pre class="log" id="log">loading…</pre>`;
      const box = (k: string): HTMLElement => root.querySelector<HTMLElement>(`#chart-${k}`)!;
      charts['cpu'] = lineChart(box('cpu'), 'CPU', '%');
      charts['mem'] = lineChart(box('mem'), 'Memory', '%');
      charts['temp'] = lineChart(box('temp'), 'Temperature', '°');
      charts['rate'] = lineChart(box('rate'), 'Inference rate (per model)', '/s');
      charts['errors'] = lineChart(box('errors'), 'Errors per interval', '');
      charts['p95'] = lineChart(box('p95'), 'p95 latency', ' ms');
      offTelemetry = store.onTelemetry((device, sample) => {
        if (device !== id) return;
        appendSample(series, sample, Date.now());
        draw();
      });
      root.addEventListener('click', (ev) => {
        const b = (ev.target as HTMLElement).closest<HTMLElement>('[data-act]');
        const d = store.devices.get(id);
        if (!b || !d) return;
        const act = b.dataset['act'];
        if (act === 'edit') editDevice(d);
        else if (act === 'deploy') void newRollout(store, { to: id });
        else if (act === 'rollback') void rollbackDevice(id, b.dataset['model']!, Number(b.dataset['version']));
        else if (act === 'log') void loadLog();
      });
      update();
      void load();
      void loadLog();
    },
    update,
    unmount() {
      offTelemetry();
      for (const c of Object.values(charts)) c.destroy();
    },
  };
}

/** An agent's pino line as `12:01:02 INFO message key=value`; other lines as they are. */
function logLine(line: string): string {
  try {
    const e = JSON.parse(line) as Record<string, unknown>;
    if (typeof e['msg'] !== 'string') return line;
    const level = ({ 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' } as Record<number, string>)[e['level'] as number] ?? '';
    const rest = Object.entries(e).filter(([k]) => !['level', 'time', 'msg', 'pid', 'hostname', 'device'].includes(k)).map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`);
    return `${typeof e['time'] === 'number' ? new Date(e['time']).toLocaleTimeString() : ''} ${level} ${e['msg']} ${rest.join(' ')}`.trim();
  } catch {
    return line; // not JSON: a crash trace or an older agent's line
  }
}
