/**
 * The dashboard: one static page. It asks for the operator token once (kept in
 * sessionStorage, sent as the first WebSocket message and as a Bearer header,
 * never in a URL) and renders the live feed: devices, presence, telemetry, rollouts.
 */
export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>edgefleet</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font:14px system-ui,sans-serif;margin:1.5rem;color:#222}
 h1{font-size:1.3rem} h2{font-size:1.05rem;margin-top:1.5rem}
 table{border-collapse:collapse;width:100%} th,td{text-align:left;padding:.3rem .6rem;border-bottom:1px solid #ddd}
 .on{color:#080;font-weight:600} .off{color:#a00} .muted{color:#777}
 .err{color:#a00;font-weight:600}
 #login{margin:1rem 0} #status{float:right}
</style>
</head>
<body>
<h1>edgefleet <span id="status" class="muted">disconnected</span></h1>
<p id="error" class="err" role="alert" hidden></p>
<form id="login" hidden><label>Operator token <input id="token" type="password" size="50" autocomplete="off"></label> <button>Connect</button></form>
<h2>Devices <span id="count" class="muted"></span></h2>
<table><thead><tr><th>device</th><th>state</th><th>groups</th><th>models</th><th>cpu</th><th>memory</th><th>temp</th><th>last seen</th></tr></thead><tbody id="devices"></tbody></table>
<h2>Rollouts</h2>
<table><thead><tr><th>id</th><th>model</th><th>target</th><th>status</th><th>waves</th><th>devices</th><th>reason</th></tr></thead><tbody id="rollouts"></tbody></table>
<script>
const devices = new Map(); const rollouts = new Map();
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? '').replace(/[&<>"]/g, (c) => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));
function render() {
  const rows = [...devices.values()].sort((a, b) => a.id < b.id ? -1 : 1).map((d) => {
    const t = d.telemetry || {};
    const models = (d.info && d.info.models || []).map((m) => m.name + '@' + m.version).join(', ');
    const mem = t.memoryTotalBytes ? Math.round(100 * t.memoryUsedBytes / t.memoryTotalBytes) + '%' : '';
    return '<tr data-device="' + esc(d.id) + '"><td>' + esc(d.id) + '</td><td class="' + (d.online ? 'on">online' : 'off">offline') + '</td><td>' + esc((d.groups || []).join(', ')) +
      '</td><td>' + esc(models) + '</td><td>' + (t.cpuPercent != null ? t.cpuPercent.toFixed(0) + '%' : '') + '</td><td>' + mem + '</td><td>' + (t.temperatureC != null ? t.temperatureC.toFixed(1) + ' °C' : '') +
      '</td><td class="muted">' + esc(d.lastSeen || '') + '</td></tr>';
  });
  $('devices').innerHTML = rows.join('');
  $('count').textContent = devices.size + ' (' + [...devices.values()].filter((d) => d.online).length + ' online)';
  $('rollouts').innerHTML = [...rollouts.values()].sort((a, b) => a.createdAt < b.createdAt ? 1 : -1).map((r) =>
    '<tr data-rollout="' + esc(r.id) + '"><td>' + esc(r.id) + '</td><td>' + esc(r.model + '@' + r.version) + '</td><td>' + esc(r.target) + '</td><td>' + esc(r.status) + '</td><td>' +
    r.waves.map((w) => esc(w.label) + ':' + esc(w.state)).join(' ') + '</td><td>' + r.devices.switched + '/' + r.devices.total + ' switched' +
    (r.devices.failed ? ', ' + r.devices.failed + ' failed' : '') + '</td><td class="muted">' + esc(r.reason || '') + '</td></tr>').join('');
}
function connect(token) {
  const ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws');
  $('status').textContent = 'connecting'; $('status').className = 'muted';
  ws.onopen = () => ws.send(JSON.stringify({ token }));
  const apply = (e) => {
    if (e.type === 'snapshot') { devices.clear(); rollouts.clear(); e.devices.forEach((d) => devices.set(d.id, d)); e.rollouts.forEach((r) => rollouts.set(r.id, r)); }
    else if (e.type === 'device') devices.set(e.device, Object.assign(devices.get(e.device) || {}, e.record));
    else if (e.type === 'telemetry') { const d = devices.get(e.device); if (d) d.telemetry = e.sample; }
    else if (e.type === 'rollout') rollouts.set(e.id, e.summary);
  };
  ws.onmessage = (m) => {
    const e = JSON.parse(m.data);
    $('status').textContent = 'live'; $('status').className = 'on'; $('error').hidden = true;
    if (e.type === 'batch') e.events.forEach(apply); else apply(e);
    render();
  };
  ws.onclose = (e) => {
    $('status').textContent = e.code === 4401 ? 'wrong token' : 'disconnected'; $('status').className = 'err';
    if (e.code === 4401) {
      sessionStorage.removeItem('edgefleet-token'); $('login').hidden = false;
      devices.clear(); rollouts.clear(); render(); $('count').textContent = '';
      $('error').textContent = 'Wrong operator token: the controller refused it. Paste the token from <data dir>/operator.token on the controller.';
      $('error').hidden = false; $('token').select();
    }
    else setTimeout(() => connect(token), 2000);
  };
}
$('login').onsubmit = (ev) => { ev.preventDefault(); const t = $('token').value.trim(); sessionStorage.setItem('edgefleet-token', t); $('login').hidden = true; connect(t); };
const saved = sessionStorage.getItem('edgefleet-token');
if (saved) connect(saved); else $('login').hidden = false;
</script>
</body>
</html>
`;
