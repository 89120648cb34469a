/**
 * The dashboard: asks for the operator token once (kept for the tab), opens the live feed,
 * and shows the view the address names (#/fleet, #/device/ID, #/models, #/rollouts[/ID]).
 * Times and countdowns tick every second; everything else changes when the feed says so.
 */
import { newRollout } from './actions.js';
import { openFeed, token } from './api.js';
import type { Feed } from './api.js';
import { deviceView } from './device.js';
import { toast } from './dialogs.js';
import { fleetView } from './fleet.js';
import { ago, duration } from './format.js';
import { modelsView } from './models.js';
import { rolloutsView } from './rollouts.js';
import { Store } from './store.js';
import type { View } from './view.js';

const $ = <T extends HTMLElement = HTMLElement>(id: string): T => document.getElementById(id) as T;
const store = new Store();
let view: View | undefined;
let feed: Feed | undefined;
let retry: ReturnType<typeof setTimeout> | undefined;

function status(text: string, cls: string): void {
  $('status').textContent = text;
  $('status').className = cls;
}

function route(): void {
  view?.unmount();
  const [, name = 'fleet', arg] = /^#\/([a-z]+)(?:\/(.+))?$/.exec(location.hash) ?? [];
  const id = arg ? decodeURIComponent(arg) : undefined;
  view = name === 'device' && id ? deviceView(store, id) : name === 'models' ? modelsView(store) : name === 'rollouts' ? rolloutsView(store, id) : fleetView(store);
  const main = $('view');
  const fresh = main.cloneNode(false) as HTMLElement; // drops the listeners of the view that was here
  main.replaceWith(fresh);
  for (const a of document.querySelectorAll<HTMLElement>('[data-nav]')) a.classList.toggle('current', a.dataset['nav'] === (name === 'device' ? 'fleet' : name));
  if (token.get()) view.mount(fresh);
  else view = undefined;
}

function signedOut(message: string): void {
  token.clear();
  feed = undefined;
  view?.unmount();
  view = undefined;
  store.clear();
  $('view').innerHTML = '';
  $('new-rollout').hidden = true;
  $('error').textContent = message;
  $('error').hidden = false;
  $('login').hidden = false;
  $<HTMLInputElement>('token').select();
}

function connect(): void {
  clearTimeout(retry);
  status('connecting', 'muted');
  feed = openFeed(
    (e) => store.apply(e),
    () => {
      status('live', 'on');
      $('error').hidden = true;
      $('new-rollout').hidden = false;
    },
    (code) => {
      if (code === 4401) {
        status('wrong token', 'err');
        signedOut("Wrong operator token: the controller refused it. Paste the token from operator.token in the controller's data directory (~/.edgefleet/operator.token by default).");
        return;
      }
      status('disconnected', 'err');
      retry = setTimeout(connect, 2000);
    },
  );
}

/** Relative times and countdowns, once a second, without re-rendering. */
function tick(): void {
  const now = Date.now();
  for (const el of document.querySelectorAll<HTMLElement>('[data-ago]')) if (el.dataset['ago']) el.textContent = ago(Number(el.dataset['ago']), now);
  for (const el of document.querySelectorAll<HTMLElement>('[data-until]')) el.textContent = `${el.dataset['prefix'] ?? ''}${duration((Number(el.dataset['until']) - now) / 1000)}`;
}

store.onChange(() => view?.update());
window.addEventListener('hashchange', route);
$('login').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const t = $<HTMLInputElement>('token').value.trim();
  if (!t) return;
  token.set(t);
  $('login').hidden = true;
  $<HTMLInputElement>('token').value = '';
  route();
  connect();
});
$('new-rollout').addEventListener('click', () => void newRollout(store).catch((error: Error) => toast(error.message, true)));
setInterval(tick, 1000);
if (token.get()) {
  route();
  connect();
} else {
  $('login').hidden = false;
  route();
}
void feed;
