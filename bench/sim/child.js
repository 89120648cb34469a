/** A bench process driven over IPC: `ask` sends a message and waits for the answer of a type; `ready` and `exit` as promises. */
import { fork } from 'node:child_process';

export function child(file, args = [], env = {}, execArgv = []) {
  const c = fork(file, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], env: { ...process.env, ...env }, execArgv });
  const waitFor = (type) =>
    new Promise((resolve) => {
      const on = (m) => {
        if (m.type !== type) return;
        c.off('message', on);
        resolve(m);
      };
      c.on('message', on);
    });
  const ask = (msg, type) => {
    const answer = waitFor(type);
    c.send(msg);
    return answer;
  };
  const ready = new Promise((resolve, reject) => {
    c.once('message', (m) => (m.type === 'ready' ? resolve(m) : reject(new Error(JSON.stringify(m)))));
    c.once('exit', (code) => reject(new Error(`${file} exited with ${code} before it was ready`)));
  });
  const exit = new Promise((resolve) => c.once('exit', (code, signal) => resolve({ code, signal })));
  return { c, ask, waitFor, ready, exit };
}
