/**
 * The rollout executor: carries out the steps `nextStep` (plan.ts) decides, one at a
 * time, writing the rollout's record to the state file after every step. It does I/O
 * only (deliveries, rollbacks, telemetry lookups, writes); every decision, the gate's
 * included, is the plan's. A controller restarted after `kill -9` reads the records
 * back and continues each running rollout where it was.
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { FleetError, assertName, ownEntry, toErrorBody } from '@edgefleet/protocol';
import type { ErrorBody } from '@edgefleet/protocol';
import type { FleetRepository } from '../state/repository.js';
import type { ArtifactKind, DeviceRecord, RolloutDevice, RolloutRecord, RolloutTarget } from '../state/schema.js';
import type { Fleet } from '../devices/presence.js';
import type { Metrics } from '../api/metrics.js';
import { EMPTY_HEALTH, combineHealth, summarizeHealth } from './health.js';
import { containerVerdicts, evaluateGate, gateFailureReason } from './gate.js';
import { applyRewave, newRollout, nextStep } from './plan.js';
import type { RolloutStep } from './plan.js';
import { resolvePolicy } from './policy.js';
import type { PolicyInput } from './policy.js';
import { summarize } from './summary.js';
import { formatTarget, isDynamicTarget, targetDevices } from './target.js';

export type DeliveryOutcome = { ok: true; version: number; previous?: number | null } | { ok: false; error: ErrorBody };

/** Delivers (and activates) one model or image version on some devices; one outcome per device. */
export type DeliverFn = (args: {
  kind: ArtifactKind;
  model: string;
  version: number;
  target: RolloutTarget;
  devices: string[];
  onProgress?: (device: string, received: number, total: number) => void;
}) => Promise<Record<string, DeliveryOutcome>>;

/** Switches one device back to `previous` of a model or an app (for an app with none before: stops it). */
export type RollbackFn = (args: { kind: ArtifactKind; device: string; model: string; previous: number | null }) => Promise<{ version: number | null }>;

export interface RolloutsOptions {
  state: FleetRepository;
  fleet: Fleet;
  deliver: DeliverFn;
  rollback: RollbackFn;
  logger: Logger;
  metrics?: Metrics;
  /** How often a waiting rollout re-checks presence and clocks at most. Default 1000 ms. */
  tickMs?: number;
}

export interface CreateRolloutInput {
  /** Default 'model'. */
  kind?: ArtifactKind;
  model: string;
  version?: number;
  to: RolloutTarget;
  policy?: PolicyInput;
  actor: string;
}

export class Rollouts {
  readonly #state: FleetRepository;
  readonly #fleet: Fleet;
  readonly #deliver: DeliverFn;
  readonly #rollback: RollbackFn;
  readonly #log: Logger;
  readonly #metrics: Metrics | undefined;
  readonly #tickMs: number;
  readonly #running = new Map<string, Promise<void>>();
  readonly #wakers = new Set<() => void>();
  /** Live transfer progress per rollout and device (not persisted). */
  readonly progress = new Map<string, Map<string, { received: number; total: number }>>();
  #closed = false;

  constructor(opts: RolloutsOptions) {
    this.#state = opts.state;
    this.#fleet = opts.fleet;
    this.#deliver = opts.deliver;
    this.#rollback = opts.rollback;
    this.#log = opts.logger.child({ component: 'rollouts' });
    this.#metrics = opts.metrics;
    this.#tickMs = opts.tickMs ?? 1000;
    this.#fleet.on('feed', (e) => {
      if (e.type === 'device' && e.online) this.#wake();
    });
    this.#updateGauge();
  }

  list(): RolloutRecord[] {
    return this.#state.rollouts().sort((a, b) => (a.createdAt < b.createdAt ? 1 : -1));
  }

  /** Whether a running rollout switches `device` to or from `model@version` (so its telemetry is expected). */
  expects(device: string, model: string, version: number): boolean {
    for (const id of this.#running.keys()) {
      const r = this.#state.rollout(id);
      const d = r?.model === model ? ownEntry(r.devices, device) : undefined;
      if (d && (r!.version === version || d.previous === version)) return true;
    }
    return false;
  }

  get(id: string): RolloutRecord {
    const r = this.#state.rollout(id);
    if (!r) throw new FleetError('not_found', `no rollout ${id}; see \`hostManager rollouts list\``);
    return r;
  }

  /** Continues every rollout left running (after a restart). */
  resumeAll(): void {
    for (const r of this.#state.rollouts()) {
      if (r.status === 'running') {
        this.#log.info({ rollout: r.id }, 'continuing a rollout left running');
        this.#start(r.id);
      }
    }
  }

  async create(input: CreateRolloutInput, versionOf: (name: string, version: number | undefined, kind: ArtifactKind) => number): Promise<RolloutRecord> {
    const kind = input.kind ?? 'model';
    assertName(kind, input.model);
    const version = versionOf(input.model, input.version, kind);
    const policy = resolvePolicy(input.policy);
    const all = this.#candidates();
    if (input.to.kind === 'device') this.#state.requireDevice(input.to.name);
    if (input.to.kind === 'group' && !all.some((d) => d.groups.includes(input.to.kind === 'group' ? input.to.name : ''))) {
      throw new FleetError('not_found', `group ${input.to.name} has no devices; see \`hostManager groups\``);
    }
    const chosen = targetDevices(all, input.to);
    if (chosen.length === 0 && input.to.kind === 'selector') {
      throw new FleetError('not_found', `no device matches ${formatTarget(input.to)} now; see the labels and facts in \`hostManager devices list\``);
    }
    if (chosen.length === 0) throw new FleetError('not_found', 'the fleet has no devices to roll out to; add one with `hostManager devices add`');
    const unfinishedOn = (r: RolloutRecord, device: string): boolean => {
      const was = ownEntry(r.devices, device);
      return was !== undefined && was.state !== 'switched';
    };
    const busy = this.list().find((r) => r.status === 'running' && (r.kind ?? 'model') === kind && r.model === input.model && chosen.some((d) => unfinishedOn(r, d.id)));
    if (busy) {
      throw new FleetError('conflict', `rollout ${busy.id} of ${busy.model}@${busy.version} is still running on some of these devices; abort it or wait`);
    }
    const id = `r-${new Date().toISOString().replace(/[-:T]/g, '').slice(0, 14)}-${randomBytes(3).toString('hex')}`;
    const record = newRollout({
      id,
      kind,
      model: input.model,
      version,
      target: input.to,
      policy,
      devices: chosen,
      previous: (device) => this.#activeVersion(device, kind, input.model),
      createdBy: input.actor,
      now: new Date(),
    });
    this.#state.putRollout(record);
    this.#state.appendAudit({
      actor: input.actor,
      action: 'rollout.create',
      target: `${input.model}@${version} → ${formatTarget(input.to)}`,
      result: 'ok',
      detail: { rollout: id, waves: record.waves.map((w) => ({ label: w.label, devices: w.devices.length })), policy },
    });
    await this.#state.write();
    this.#emit(record);
    this.#start(id);
    return record;
  }

  async abort(id: string, actor: string, reason = 'aborted by the operator'): Promise<RolloutRecord> {
    const r = this.get(id);
    if (r.status !== 'running') throw new FleetError('conflict', `rollout ${id} is ${r.status}, not running`);
    r.status = 'aborted';
    r.reason = reason;
    r.updatedAt = new Date().toISOString();
    this.#state.appendAudit({ actor, action: 'rollout.abort', target: id, result: 'ok' });
    await this.#state.write();
    this.#emit(r);
    this.#wake();
    return r;
  }

  async resume(id: string, actor: string): Promise<RolloutRecord> {
    const r = this.get(id);
    if (r.status !== 'aborted') throw new FleetError('conflict', `rollout ${id} is ${r.status}; only an aborted rollout can be resumed`);
    r.status = 'running';
    delete r.reason;
    // A resumed rollout gets its offline allowance again from now.
    r.deadline = new Date(Date.now() + r.policy.offlineDeadlineS * 1000).toISOString();
    r.updatedAt = new Date().toISOString();
    this.#state.appendAudit({ actor, action: 'rollout.resume', target: id, result: 'ok' });
    await this.#state.write();
    this.#emit(r);
    this.#start(id);
    return r;
  }

  /** Stops a rollout (if running) and switches every device it switched back to its previous version. */
  async rollbackRollout(id: string, actor: string): Promise<RolloutRecord> {
    const r = this.get(id);
    if (r.status === 'running') {
      r.status = 'aborted';
      r.reason = 'rolled back by the operator';
      await this.#state.write();
      await this.#running.get(id);
    }
    const switched = Object.values(r.devices).filter((d) => d.state === 'switched').map((d) => d.id);
    await this.#rollbackDevices(r, switched, actor);
    const left = Object.values(r.devices).filter((d) => d.state === 'switched').length;
    r.status = 'rolled-back';
    r.reason = `rolled back by ${actor}` + (left ? `; ${left} device(s) could not be rolled back (see their errors)` : '');
    r.finishedAt = new Date().toISOString();
    r.updatedAt = r.finishedAt;
    this.#state.appendAudit({ actor, action: 'rollout.rollback', target: id, result: left ? 'error' : 'ok', detail: { devices: switched } });
    await this.#state.write();
    this.#emit(r);
    return r;
  }

  /**
   * Switches one device back to the version it ran before the newest rollout of `model` that
   * switched it (that rollout's record shows the device rolled back; the rollout itself goes on).
   */
  async rollbackDevice(device: string, model: string, actor: string): Promise<RolloutRecord> {
    this.#state.requireDevice(device);
    const r = this.list().find((x) => (x.kind ?? 'model') === 'model' && x.model === model && ownEntry(x.devices, device)?.state === 'switched');
    if (!r) throw new FleetError('not_found', `no rollout of ${model} switched ${device}; nothing to roll back (see \`hostManager rollouts list\`)`);
    await this.#rollbackDevices(r, [device], actor);
    const d = ownEntry(r.devices, device)!;
    r.updatedAt = new Date().toISOString();
    await this.#state.write();
    this.#emit(r);
    if (d.state !== 'rolled-back') throw new FleetError(d.error?.code ?? 'internal', d.error?.message ?? `${device} could not be rolled back`);
    return r;
  }

  /** Resolves when the rollout is no longer running (finished, failed or aborted). */
  async settled(id: string): Promise<RolloutRecord> {
    await this.#running.get(id);
    return this.get(id);
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#wake();
    await Promise.allSettled([...this.#running.values()]);
  }

  /** Devices a rollout may reach: provisioned here, or seen reporting on an external broker. */
  #candidates(): DeviceRecord[] {
    return this.#state.devices().filter((d) => d.provisioned !== false || d.info);
  }

  /** What the device last reported running: the model's active version, or the version of the app's running container. */
  #activeVersion(device: string, kind: ArtifactKind, name: string): number | null {
    const info = this.#state.device(device)?.info;
    if (kind === 'image') return info?.containers?.find((c) => c.role === 'app' && c.app === name && c.running)?.version ?? null;
    return info?.models.find((m) => m.name === name)?.version ?? null;
  }

  #start(id: string): void {
    if (this.#running.has(id) || this.#closed) return;
    const run = this.#run(id)
      .catch((error: unknown) => {
        this.#log.error({ rollout: id, err: error }, 'rollout executor stopped on an unexpected error');
        const r = this.#state.rollout(id);
        if (r && r.status === 'running') {
          r.status = 'failed';
          r.reason = `controller error: ${(error as Error).message}`;
          return this.#state.write();
        }
        return undefined;
      })
      .finally(() => {
        this.#running.delete(id);
        this.#updateGauge();
      });
    this.#running.set(id, run);
    this.#updateGauge();
  }

  async #run(id: string): Promise<void> {
    while (!this.#closed) {
      const r = this.#state.rollout(id);
      if (!r || r.status !== 'running') return;
      const matching = isDynamicTarget(r.target) ? () => targetDevices(this.#candidates(), r.target) : undefined;
      const step = nextStep(r, (d) => this.#fleet.isOnline(d), new Date(), matching);
      if (step.kind === 'idle') return;
      if (step.kind === 'wait') {
        await this.#sleep(step.until);
        continue;
      }
      this.#log.debug({ rollout: id, step: step.kind }, 'rollout step');
      await this.#apply(r, step);
      r.updatedAt = new Date().toISOString();
      await this.#state.write();
      this.#emit(r);
    }
  }

  async #apply(r: RolloutRecord, step: Exclude<RolloutStep, { kind: 'idle' | 'wait' }>): Promise<void> {
    const now = new Date();
    switch (step.kind) {
      case 'deliver': {
        await this.#deliverTo(r, step.wave, step.devices);
        return;
      }
      case 'rewave':
        applyRewave(r, step, (id) => this.#activeVersion(id, r.kind ?? 'model', r.model));
        if (step.join.length || step.leave.length) this.#log.info({ rollout: r.id, wave: step.wave, join: step.join, leave: step.leave }, 'target re-evaluated as the wave starts');
        return;
      case 'mark-waiting':
        for (const id of step.devices) {
          const d = ownEntry(r.devices, id);
          if (d) d.state = 'waiting';
        }
        this.#log.info({ rollout: r.id, devices: step.devices }, 'devices offline during their wave; retried when they return');
        return;
      case 'skip':
        for (const id of step.devices) {
          const d = ownEntry(r.devices, id);
          if (d) {
            d.state = 'skipped';
            d.error = { code: 'deadline_exceeded', message: `offline until the rollout's deadline ${r.deadline}` };
          }
        }
        return;
      case 'start-soak': {
        const wave = r.waves[step.wave]!;
        wave.state = 'soaking';
        wave.switchedAt = now.toISOString();
        wave.soakUntil = new Date(now.getTime() + r.policy.soakS * 1000).toISOString();
        return;
      }
      case 'gate': {
        const wave = r.waves[step.wave]!;
        const devices = wave.devices.map((id) => ownEntry(r.devices, id)).filter((d): d is RolloutDevice => d !== undefined);
        const switched = devices.filter((d) => d.state === 'switched');
        const before = combineHealth(switched.map((d) => d.before ?? EMPTY_HEALTH));
        const after = combineHealth(
          switched.map((d) =>
            summarizeHealth(this.#fleet.history.health(d.id, `${r.model}@${r.version}`, Date.parse(d.switchedAt ?? wave.switchedAt ?? r.createdAt))),
          ),
        );
        const containers = r.kind === 'image' ? containerVerdicts(r.model, r.version, switched, (id) => this.#state.device(id)) : undefined;
        const gate = evaluateGate(r.policy, devices, before, after, containers);
        wave.gate = gate;
        wave.state = gate.pass ? 'passed' : 'failed';
        wave.finishedAt = now.toISOString();
        this.#state.appendAudit({
          actor: 'controller',
          action: 'rollout.gate',
          target: `${r.id} wave ${wave.index} (${wave.label})`,
          result: gate.pass ? 'ok' : 'error',
          detail: gate,
        });
        this.#log.info({ rollout: r.id, wave: wave.index, pass: gate.pass, reasons: gate.reasons }, 'wave gate');
        if (!gate.pass) r.reason = gateFailureReason(wave);
        return;
      }
      case 'rollback':
        await this.#rollbackDevices(r, step.devices, 'controller');
        return;
      case 'finish':
        r.status = step.status;
        r.reason = step.reason;
        r.finishedAt = now.toISOString();
        this.#state.appendAudit({ actor: 'controller', action: `rollout.${step.status}`, target: r.id, result: step.status === 'succeeded' ? 'ok' : 'error', detail: { reason: r.reason } });
        this.#log.info({ rollout: r.id, status: r.status, reason: r.reason }, 'rollout finished');
        return;
    }
  }

  async #deliverTo(r: RolloutRecord, waveIndex: number, ids: string[]): Promise<void> {
    const wave = r.waves[waveIndex]!;
    const now = Date.now();
    if (wave.state === 'pending') wave.state = 'delivering';
    wave.startedAt ??= new Date(now).toISOString();
    const baselineFrom = now - Math.max(60, r.policy.soakS) * 1000;
    for (const id of ids) {
      const d = ownEntry(r.devices, id)!;
      d.state = 'delivering';
      d.attempts += 1;
      const active = this.#activeVersion(id, r.kind ?? 'model', r.model);
      if (active !== r.version) d.previous = active;
      d.before = summarizeHealth(this.#fleet.history.health(id, `${r.model}@${d.previous}`, baselineFrom, now));
    }
    await this.#state.write(); // "delivering" is on disk before anything is sent
    this.#emit(r);
    const progress = new Map<string, { received: number; total: number }>();
    this.progress.set(r.id, progress);
    let outcomes: Record<string, DeliveryOutcome>;
    try {
      outcomes = await this.#deliver({
        kind: r.kind ?? 'model',
        model: r.model,
        version: r.version,
        target: r.target,
        devices: ids,
        onProgress: (device, received, total) => progress.set(device, { received, total }),
      });
    } catch (error) {
      const body = toErrorBody(error);
      outcomes = Object.fromEntries(ids.map((id) => [id, { ok: false, error: body } as DeliveryOutcome]));
    }
    const at = new Date().toISOString();
    for (const id of ids) {
      const d = ownEntry(r.devices, id)!;
      const outcome = ownEntry(outcomes, id) ?? { ok: false, error: { code: 'internal', message: 'the delivery reported nothing for this device' } };
      if (outcome.ok) {
        d.state = 'switched';
        d.switchedAt = at;
        if (outcome.previous !== undefined && outcome.previous !== r.version) d.previous = outcome.previous;
        delete d.error;
        this.#metrics?.deliveries.inc({ result: 'ok' });
      } else if (!this.#fleet.isOnline(id) && outcome.error.code === 'deadline_exceeded') {
        d.state = 'waiting'; // went offline during the transfer: resumed when it returns
        d.error = outcome.error;
        this.#metrics?.deliveries.inc({ result: 'offline' });
      } else {
        d.state = 'failed';
        d.error = outcome.error;
        this.#metrics?.deliveries.inc({ result: 'error' });
      }
      // the controller's own record of what it observed (the device's answer), not the device's word
      this.#state.appendAudit({
        actor: 'controller',
        action: `${r.kind ?? 'model'}.deliver`,
        target: `${id}: ${r.model}@${r.version}`,
        result: outcome.ok ? 'ok' : 'error',
        detail: { rollout: r.id, wave: waveIndex, ...(outcome.ok ? { previous: d.previous } : { error: outcome.error }) },
      });
    }
  }

  async #rollbackDevices(r: RolloutRecord, ids: string[], actor: string): Promise<void> {
    await Promise.all(
      ids.map(async (id) => {
        const d = ownEntry(r.devices, id);
        if (!d) return;
        try {
          const res = await this.#rollback({ kind: r.kind ?? 'model', device: id, model: r.model, previous: d.previous });
          d.state = 'rolled-back';
          delete d.error;
          const to = res.version === null ? 'stopped' : String(res.version);
          this.#state.appendAudit({ actor, action: `${r.kind ?? 'model'}.rollback`, target: `${id}: ${r.model}@${r.version} → ${to}`, result: 'ok', detail: { rollout: r.id } });
        } catch (error) {
          const body = toErrorBody(error);
          d.error = { code: body.code, message: `rollback failed: ${body.message}` };
          if (this.#fleet.isOnline(id)) d.state = 'failed'; // it answered and refused: recorded, not retried forever
          this.#state.appendAudit({ actor, action: `${r.kind ?? 'model'}.rollback`, target: `${id}: ${r.model}`, result: 'error', detail: { rollout: r.id, error: body } });
        }
      }),
    );
  }

  #sleep(until: Date | null): Promise<void> {
    return new Promise((resolve) => {
      const ms = Math.max(10, Math.min(this.#tickMs, until ? until.getTime() - Date.now() : this.#tickMs));
      const done = (): void => {
        clearTimeout(timer);
        this.#wakers.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#wakers.add(done);
    });
  }

  #wake(): void {
    for (const w of [...this.#wakers]) w();
  }

  #emit(r: RolloutRecord): void {
    this.#fleet.emitFeed({ type: 'rollout', id: r.id, status: r.status, summary: summarize(r) });
    this.#updateGauge();
  }

  #updateGauge(): void {
    if (!this.#metrics) return;
    const counts: Record<string, number> = { running: 0, aborted: 0, succeeded: 0, failed: 0, 'rolled-back': 0 };
    for (const r of this.#state.rollouts()) counts[r.status] = (counts[r.status] ?? 0) + 1;
    for (const [status, n] of Object.entries(counts)) this.#metrics.rollouts.set({ status }, n);
  }
}
