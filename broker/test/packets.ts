/** Raw MQTT 3.1.1 packets built byte by byte, so tests can send what no well-behaved client would. */
export function varint(n: number): Buffer {
  const out: number[] = [];
  do {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) byte |= 0x80;
    out.push(byte);
  } while (n > 0);
  return Buffer.from(out);
}

export function str(s: string | Buffer): Buffer {
  const b = typeof s === 'string' ? Buffer.from(s, 'utf8') : s;
  const len = Buffer.alloc(2);
  len.writeUInt16BE(b.length);
  return Buffer.concat([len, b]);
}

function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}

export function packet(firstByte: number, body: Buffer): Buffer {
  return Buffer.concat([Buffer.from([firstByte]), varint(body.length), body]);
}

export function connect(opts: {
  clientId: string | Buffer;
  username?: string | Buffer;
  password?: string;
  will?: { topic: string | Buffer; payload: string; retain?: boolean };
  flags?: number;
  /** Clean session flag (default true). */
  clean?: boolean;
  /** Protocol name and level (default "MQTT", 4). Level 5 adds an empty property list, as MQTT 5 does. */
  protocol?: { name: string; level: number };
}): Buffer {
  let flags = opts.clean === false ? 0 : 0x02;
  if (opts.will) flags |= 0x04 | (opts.will.retain ? 0x20 : 0);
  if (opts.username !== undefined) flags |= 0x80;
  if (opts.password !== undefined) flags |= 0x40;
  if (opts.flags !== undefined) flags = opts.flags;
  const { name, level } = opts.protocol ?? { name: 'MQTT', level: 4 };
  const parts = [str(name), Buffer.from([level, flags]), u16(30), ...(level === 5 ? [Buffer.from([0])] : []), str(opts.clientId)];
  if (opts.will) parts.push(str(opts.will.topic), str(opts.will.payload));
  if (opts.username !== undefined) parts.push(str(opts.username));
  if (opts.password !== undefined) parts.push(str(opts.password));
  return packet(0x10, Buffer.concat(parts));
}

export function publish(topic: string | Buffer, payload: string | Buffer, opts: { qos?: number; id?: number; flags?: number } = {}): Buffer {
  const qos = opts.qos ?? 0;
  const flags = opts.flags ?? qos << 1;
  const id = qos > 0 || opts.id !== undefined ? u16(opts.id ?? 1) : Buffer.alloc(0);
  return packet(0x30 | flags, Buffer.concat([str(topic), id, typeof payload === 'string' ? Buffer.from(payload) : payload]));
}

export function subscribe(id: number, filters: (string | Buffer)[], opts: { flags?: number; qos?: number } = {}): Buffer {
  const parts = [u16(id)];
  for (const f of filters) parts.push(str(f), Buffer.from([opts.qos ?? 1]));
  return packet(0x80 | (opts.flags ?? 0b0010), Buffer.concat(parts));
}

export function unsubscribe(id: number, filters: string[]): Buffer {
  return packet(0xa2, Buffer.concat([u16(id), ...filters.map((f) => str(f))]));
}

export const pingreq = (): Buffer => Buffer.from([0xc0, 0x00]);
export const puback = (id: number): Buffer => packet(0x40, u16(id));
export const pubrel = (id: number, flags = 0b0010): Buffer => packet(0x60 | flags, u16(id));
export const disconnect = (): Buffer => Buffer.from([0xe0, 0x00]);
