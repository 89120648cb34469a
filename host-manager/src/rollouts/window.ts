/**
 * Maintenance windows (pure): a daily `start`-`end` span of wall-clock time in an IANA time
 * zone. A rollout with a window starts deliveries (and so switches devices) only inside it;
 * the clock is always passed in, so the same record and instant give the same answer.
 */
import { FleetError } from '@edgefleet/protocol';
import type { MaintenanceWindow } from '../state/schema.js';

const DAY_MIN = 24 * 60;

function minutesOf(hhmm: string): number {
  const [h, m] = hhmm.split(':').map(Number);
  return h! * 60 + m!;
}

/** Throws `invalid_params` unless `timeZone` is one this runtime knows (e.g. `UTC`, `Europe/Berlin`). */
export function checkTimeZone(timeZone: string): void {
  try {
    new Intl.DateTimeFormat('en-GB', { timeZone });
  } catch {
    throw new FleetError('invalid_params', `unknown time zone "${timeZone}"; use an IANA name such as UTC or Europe/Berlin`);
  }
}

/** `02:00-04:00` (and a time zone) → a window; a bad text is `invalid_params` with the expected form. */
export function parseWindow(text: string, timeZone: string): MaintenanceWindow {
  const m = /^\s*([01]\d|2[0-3]):([0-5]\d)\s*-\s*([01]\d|2[0-3]):([0-5]\d)\s*$/.exec(text);
  if (!m) throw new FleetError('invalid_params', `"${text}" is not a maintenance window; write HH:MM-HH:MM (24 h), e.g. 02:00-04:30`);
  const window = { start: `${m[1]}:${m[2]}`, end: `${m[3]}:${m[4]}`, timeZone };
  if (window.start === window.end) throw new FleetError('invalid_params', `the window ${text} is empty; give an end different from its start`);
  checkTimeZone(timeZone);
  return window;
}

/** Wall-clock minutes since midnight (and seconds into the minute) of `now` in the window's time zone. */
function wallClock(now: Date, timeZone: string): { minutes: number; seconds: number } {
  const parts = new Intl.DateTimeFormat('en-GB', { timeZone, hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' }).formatToParts(now);
  const get = (type: string): number => Number(parts.find((p) => p.type === type)?.value ?? 0);
  return { minutes: get('hour') * 60 + get('minute'), seconds: get('second') + now.getUTCMilliseconds() / 1000 };
}

export function inWindow(window: MaintenanceWindow, now: Date): boolean {
  const { minutes } = wallClock(now, window.timeZone);
  const start = minutesOf(window.start);
  const end = minutesOf(window.end);
  return start < end ? minutes >= start && minutes < end : minutes >= start || minutes < end;
}

/**
 * When the window next opens (now, if it is open). Across a daylight-saving change it can be
 * off by the shift; callers re-check with `inWindow` when they wake, so nothing switches early.
 */
export function nextWindowOpen(window: MaintenanceWindow, now: Date): Date {
  if (inWindow(window, now)) return now;
  const { minutes, seconds } = wallClock(now, window.timeZone);
  const ahead = (minutesOf(window.start) - minutes + DAY_MIN) % DAY_MIN;
  return new Date(now.getTime() + (ahead * 60 - seconds) * 1000);
}

export function formatWindow(window: MaintenanceWindow): string {
  return `${window.start}-${window.end} ${window.timeZone}`;
}
