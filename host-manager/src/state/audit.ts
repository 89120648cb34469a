/** Recording an operator action or a device result: appended to the state's audit log, written, and shown on the live feed. */
import type { FleetRepository } from './repository.js';
import type { AuditEntry } from './schema.js';

export type RecordAudit = (entry: Omit<AuditEntry, 'ts'>) => Promise<void>;

export function auditRecorder(state: FleetRepository, publish: (entry: AuditEntry) => void): RecordAudit {
  return async (entry) => {
    const full = state.appendAudit(entry);
    publish(full);
    await state.write();
  };
}
