// node bench/tools/profile-top.js FILE.cpuprofile [N] — where a CPU profile (PROFILE=dir in
// bench:telemetry / bench:rollout) spends its time: self time by function and by package, as one
// JSON object (shares of the profile's samples; "(idle)" is the event loop waiting).
import { readFile } from 'node:fs/promises';

const [file, n = '15'] = process.argv.slice(2);
if (!file) {
  console.error('usage: node bench/tools/profile-top.js FILE.cpuprofile [N]');
  process.exit(2);
}
const profile = JSON.parse(await readFile(file, 'utf8'));
const byId = new Map(profile.nodes.map((node) => [node.id, node]));
const hits = new Map();
for (const id of profile.samples) hits.set(id, (hits.get(id) ?? 0) + 1);
const total = profile.samples.length;
const byFunction = new Map();
const byPackage = new Map();
for (const [id, count] of hits) {
  const { functionName, url, lineNumber } = byId.get(id).callFrame;
  const where = url.includes('node_modules/') ? url.split('node_modules/').pop().split('/').slice(0, url.includes('node_modules/@') ? 2 : 1).join('/') : url.includes('/dist/') ? `edgefleet:${url.split('/dist/')[0].split('/').pop()}` : url.startsWith('node:') ? url : url ? 'other' : functionName;
  const fn = `${functionName || '(anonymous)'} ${url.split('/').pop()}:${lineNumber + 1}`;
  byFunction.set(fn, (byFunction.get(fn) ?? 0) + count);
  byPackage.set(where, (byPackage.get(where) ?? 0) + count);
}
const top = (m) => Object.fromEntries([...m].sort((a, b) => b[1] - a[1]).slice(0, Number(n)).map(([k, v]) => [k, Number((v / total).toFixed(3))]));
console.log(JSON.stringify({ file, samples: total, byPackage: top(byPackage), byFunction: top(byFunction) }));
