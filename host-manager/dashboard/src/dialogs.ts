/**
 * Every action the dashboard takes goes through one confirmation: the dialog says exactly what
 * will happen, the action runs only on "Confirm", and the controller's refusal is shown in the
 * dialog (nothing is half done on the page's side: the API call is the action).
 */
import { ApiError } from './api.js';
import { esc } from './format.js';

const dialog = (): HTMLDialogElement => document.getElementById('dialog') as HTMLDialogElement;

export function toast(text: string, bad = false): void {
  const el = document.getElementById('toast')!;
  el.textContent = text;
  el.className = bad ? 'bad' : '';
  el.hidden = false;
  clearTimeout(Number(el.dataset['timer'] ?? 0));
  el.dataset['timer'] = String(setTimeout(() => (el.hidden = true), bad ? 8000 : 4000));
}

export interface ConfirmOptions {
  title: string;
  /** HTML (escaped by the caller) describing what will happen. */
  body: string;
  confirm: string;
  danger?: boolean;
  run: () => Promise<unknown>;
  /** Said when it worked. */
  done: string;
}

/** Shows the confirmation; resolves true once the action ran, false when cancelled. */
export function confirmAction(o: ConfirmOptions): Promise<boolean> {
  const d = dialog();
  d.innerHTML = `<h2>${esc(o.title)}</h2><div class="summary">${o.body}</div><p class="problem" role="alert" hidden></p>
    <div class="buttons"><button type="button" data-d="cancel">Cancel</button><button type="button" class="${o.danger ? 'danger' : 'primary'}" data-d="confirm">${esc(o.confirm)}</button></div>`;
  return new Promise((resolve) => {
    const problem = d.querySelector<HTMLElement>('.problem')!;
    const confirm = d.querySelector<HTMLButtonElement>('[data-d=confirm]')!;
    d.querySelector<HTMLButtonElement>('[data-d=cancel]')!.onclick = () => {
      d.close();
      resolve(false);
    };
    confirm.onclick = async () => {
      confirm.disabled = true;
      problem.hidden = true;
      try {
        await o.run();
        d.close();
        toast(o.done);
        resolve(true);
      } catch (error) {
        problem.textContent = error instanceof ApiError ? error.message : String(error);
        problem.hidden = false;
        confirm.disabled = false;
      }
    };
    if (!d.open) d.showModal();
  });
}

/** A form in the dialog; `submit` returns a problem sentence to show, or undefined when it moved on. */
export function formDialog(title: string, fields: string, submitLabel: string, submit: (form: HTMLFormElement) => string | undefined | Promise<string | undefined>): void {
  const d = dialog();
  d.innerHTML = `<h2>${esc(title)}</h2><form class="fields" method="dialog">${fields}<p class="problem full" role="alert" hidden></p>
    <div class="buttons full"><button type="button" data-d="cancel">Cancel</button><button class="primary" data-d="submit">${esc(submitLabel)}</button></div></form>`;
  const form = d.querySelector('form')!;
  d.querySelector<HTMLButtonElement>('[data-d=cancel]')!.onclick = () => d.close();
  form.onsubmit = async (ev) => {
    ev.preventDefault();
    const problem = form.querySelector<HTMLElement>('.problem')!;
    const said = await submit(form);
    if (said) {
      problem.textContent = said;
      problem.hidden = false;
    }
  };
  if (!d.open) d.showModal();
}

export function value(form: HTMLFormElement, name: string): string {
  return ((form.elements.namedItem(name) as HTMLInputElement | null)?.value ?? '').trim();
}
