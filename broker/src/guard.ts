/**
 * Validation in front of Aedes. Every byte a client sends passes through a
 * PacketGuard that frames MQTT 3.1.1 packets incrementally: it reads each fixed
 * header, refuses a packet whose announced size is over the limit before any of
 * its body is buffered, and inspects only the parts that need checking (PUBLISH
 * topic and packet id; CONNECT, SUBSCRIBE and UNSUBSCRIBE, which are small and
 * rare). Payload bytes are passed through untouched and never copied.
 *
 * On the first violation the connection is closed without a reply, as MQTT 3.1.1
 * requires for malformed packets [MQTT-4.8.0-1]. The one exception is a CONNECT
 * with a protocol level we do not speak: it is answered with CONNACK 0x01 first
 * [MQTT-3.1.2-2].
 *
 * The guard sits on the transport's Readable.push (see guardStream): bytes are checked
 * as the socket delivers them, before Node queues them and before Aedes' parser
 * buffers them, and Aedes still reads and writes the real socket (no extra stream hop).
 */
import { isUtf8 } from 'node:buffer';
import type { Duplex } from 'node:stream';

export interface GuardLimits {
  /** Whole packet: fixed header + remaining length. */
  maxPacketSize: number;
  /** Topic names and filters, in UTF-8 bytes. */
  maxTopicLength: number;
  /** '/'-separated levels of a topic name or filter. */
  maxTopicLevels: number;
}

export const DEFAULT_LIMITS: GuardLimits = {
  maxPacketSize: 4 * 1024 * 1024,
  maxTopicLength: 1024,
  maxTopicLevels: 32,
};

/** CONNECT, SUBSCRIBE and UNSUBSCRIBE are read whole; they never need to be large. */
export const MAX_CONTROL_PACKET = 64 * 1024;
/**
 * Topic filters in one SUBSCRIBE or UNSUBSCRIBE. An agent asks for 2 + 2 per group + the legacy
 * topic; without a cap one 64 KiB packet carries ~7,000 filters, each one an ACL decision and,
 * when refused, a log line (measured: ~300 ms of the shared thread per packet).
 */
export const MAX_FILTERS_PER_PACKET = 128;
/** Client ids: ours are device ids (<= 64) or `<operator>-<suffix>`. */
export const MAX_CLIENT_ID_BYTES = 256;

const CONNECT = 1;
const PUBLISH = 3;
const PUBACK = 4;
const PUBREC = 5;
const PUBREL = 6;
const PUBCOMP = 7;
const SUBSCRIBE = 8;
const UNSUBSCRIBE = 10;
const PINGREQ = 12;
const DISCONNECT = 14;

/** Required fixed-header flags per packet type a server may receive [MQTT-2.2.2-1]; undefined = not client-to-server. */
const REQUIRED_FLAGS: (number | undefined)[] = [];
REQUIRED_FLAGS[CONNECT] = 0;
REQUIRED_FLAGS[PUBACK] = 0;
REQUIRED_FLAGS[PUBREC] = 0;
REQUIRED_FLAGS[PUBREL] = 0b0010;
REQUIRED_FLAGS[PUBCOMP] = 0;
REQUIRED_FLAGS[SUBSCRIBE] = 0b0010;
REQUIRED_FLAGS[UNSUBSCRIBE] = 0b0010;
REQUIRED_FLAGS[PINGREQ] = 0;
REQUIRED_FLAGS[DISCONNECT] = 0;

const TYPE_NAMES = ['reserved(0)', 'CONNECT', 'CONNACK', 'PUBLISH', 'PUBACK', 'PUBREC', 'PUBREL', 'PUBCOMP', 'SUBSCRIBE', 'SUBACK', 'UNSUBSCRIBE', 'UNSUBACK', 'PINGREQ', 'PINGRESP', 'DISCONNECT', 'reserved(15)'];

const enum State {
  Header,
  Prefix,
  Skip,
}

export class Violation extends Error {
  constructor(
    readonly reason: string,
    readonly packetType: string,
    /** A CONNACK return code to send before closing (otherwise nothing is sent). */
    readonly connack?: number,
  ) {
    super(`${packetType}: ${reason}`);
  }
}

/** CONNACK return code 0x01: unacceptable protocol level (MQTT 3.1.1, table 3.1). */
export const UNACCEPTABLE_PROTOCOL_LEVEL = 1;

/** MQTT 3.1.1 ("MQTT", level 4) and MQTT 3.1 ("MQIsdp", level 3): the versions without MQTT 5's properties. */
const PROTOCOL_LEVELS = new Map([
  ['MQTT', 4],
  ['MQIsdp', 3],
]);

/**
 * Incremental framer and validator. `feed` returns undefined when every byte so far
 * is acceptable, or the first Violation; after a violation the guard must not be fed again.
 */
export class PacketGuard {
  private state = State.Header;
  private readonly header = Buffer.allocUnsafe(5);
  private headerLength = 0;
  private type = 0;
  private flags = 0;
  private remaining = 0;
  /** Body bytes still to pass in State.Skip. */
  private bodyLeft = 0;
  /** Bytes of the body the current inspection needs (from the start of the body). */
  private need = 0;
  private prefix: Buffer | undefined;
  private prefixLength = 0;
  private publishTopicLength = -1;
  private connected = false;
  /** Client id and username from the CONNECT, for logs. */
  clientId: string | undefined;
  username: string | undefined;

  constructor(private readonly limits: GuardLimits) {}

  feed(chunk: Buffer): Violation | undefined {
    let pos = 0;
    const len = chunk.length;
    while (pos < len) {
      if (this.state === State.Skip) {
        const n = Math.min(this.bodyLeft, len - pos);
        pos += n;
        this.bodyLeft -= n;
        if (this.bodyLeft === 0) this.state = State.Header;
        continue;
      }
      if (this.state === State.Header) {
        const byte = chunk[pos++]!;
        this.header[this.headerLength++] = byte;
        if (this.headerLength === 1) {
          const v = this.checkFirstByte(byte);
          if (v) return v;
          continue;
        }
        if (byte & 0x80) {
          // [MQTT-2.2.3]: at most four bytes of remaining length
          if (this.headerLength === 5) return this.violation('malformed remaining length (more than 4 bytes)');
          continue;
        }
        const v = this.headerComplete();
        if (v) return v;
        continue;
      }
      // State.Prefix: the first `need` bytes of the body are needed for inspection.
      if (this.prefixLength === 0 && len - pos >= this.need) {
        // fast path: the whole prefix is in this chunk, inspect it in place
        const v = this.inspect(chunk, pos);
        if (v) return v;
        pos += this.consumedByInspection();
        continue;
      }
      this.prefix ??= Buffer.allocUnsafe(Math.max(this.need, 64));
      if (this.prefix.length < this.need) {
        const bigger = Buffer.allocUnsafe(this.need);
        this.prefix.copy(bigger, 0, 0, this.prefixLength);
        this.prefix = bigger;
      }
      const n = Math.min(this.need - this.prefixLength, len - pos);
      chunk.copy(this.prefix, this.prefixLength, pos, pos + n);
      this.prefixLength += n;
      pos += n;
      if (this.prefixLength === this.need) {
        const collected = this.prefixLength;
        this.prefixLength = 0;
        const v = this.inspect(this.prefix.subarray(0, collected), 0);
        if (v) return v;
        // `inspect` may ask for more bytes (PUBLISH topic): keep what we have
        if (this.state === State.Prefix) {
          this.prefixLength = collected;
        }
      }
    }
    return undefined;
  }

  private violation(reason: string): Violation {
    return new Violation(reason, TYPE_NAMES[this.type] ?? 'unknown');
  }

  private checkFirstByte(byte: number): Violation | undefined {
    this.type = byte >> 4;
    this.flags = byte & 0x0f;
    const type = this.type;
    if (type === PUBLISH) {
      // [MQTT-3.3.1-4]: both QoS bits set is malformed
      if ((this.flags & 0b0110) === 0b0110) return this.violation('QoS 3 is not a valid QoS');
    } else {
      const required = REQUIRED_FLAGS[type];
      if (required === undefined) return this.violation('packet type is not one a client may send');
      if (this.flags !== required) {
        return this.violation(`reserved fixed-header flags must be 0b${required.toString(2).padStart(4, '0')}, got 0b${this.flags.toString(2).padStart(4, '0')} [MQTT-2.2.2-2]`);
      }
    }
    if (!this.connected && type !== CONNECT) return this.violation('the first packet must be CONNECT [MQTT-3.1.0-1]');
    if (this.connected && type === CONNECT) return this.violation('a second CONNECT [MQTT-3.1.0-2]');
    return undefined;
  }

  private headerComplete(): Violation | undefined {
    let remaining = 0;
    let multiplier = 1;
    for (let i = 1; i < this.headerLength; i++) {
      remaining += (this.header[i]! & 0x7f) * multiplier;
      multiplier *= 128;
    }
    this.remaining = remaining;
    const total = this.headerLength + remaining;
    this.headerLength = 0;
    if (total > this.limits.maxPacketSize) {
      return this.violation(`packet of ${total} bytes is over the ${this.limits.maxPacketSize}-byte limit`);
    }
    switch (this.type) {
      case PUBLISH: {
        const minimum = 2 + ((this.flags & 0b0110) !== 0 ? 2 : 0);
        if (remaining < minimum) return this.violation('remaining length too short for a topic');
        this.publishTopicLength = -1;
        return this.expect(2);
      }
      case CONNECT:
      case SUBSCRIBE:
      case UNSUBSCRIBE:
        if (total > MAX_CONTROL_PACKET) {
          return this.violation(`packet of ${total} bytes is over the ${MAX_CONTROL_PACKET}-byte limit for control packets`);
        }
        if (remaining < 2) return this.violation('remaining length too short');
        return this.expect(remaining);
      case PUBACK:
      case PUBREC:
      case PUBREL:
      case PUBCOMP:
        if (remaining !== 2) return this.violation(`remaining length must be 2, got ${remaining}`);
        return this.skip(remaining);
      default: // PINGREQ, DISCONNECT
        if (remaining !== 0) return this.violation(`remaining length must be 0, got ${remaining}`);
        return this.skip(0);
    }
  }

  private expect(bytes: number): undefined {
    this.need = bytes;
    this.state = State.Prefix;
    return undefined;
  }

  private skip(bytes: number): undefined {
    this.bodyLeft = bytes;
    this.state = bytes === 0 ? State.Header : State.Skip;
    return undefined;
  }

  /** How many body bytes the last in-place inspection consumed from the chunk. */
  private lastConsumed = 0;
  private consumedByInspection(): number {
    return this.lastConsumed;
  }

  /**
   * Inspects `this.need` bytes of body at buf[off]. Either asks for more (stays in
   * State.Prefix with a larger `need`) or moves on to skip the rest of the body.
   */
  private inspect(buf: Buffer, off: number): Violation | undefined {
    const need = this.need;
    switch (this.type) {
      case PUBLISH: {
        const qos = (this.flags >> 1) & 0b11;
        if (this.publishTopicLength < 0) {
          const topicLength = buf.readUInt16BE(off);
          if (topicLength === 0) return this.violation('empty topic name [MQTT-4.7.3-1]');
          if (topicLength > this.limits.maxTopicLength) {
            return this.violation(`topic of ${topicLength} bytes is over the ${this.limits.maxTopicLength}-byte limit`);
          }
          const prefix = 2 + topicLength + (qos > 0 ? 2 : 0);
          if (prefix > this.remaining) return this.violation('topic length runs past the end of the packet');
          this.publishTopicLength = topicLength;
          // ask for topic + packet id; in place when the chunk has them, else they are collected
          this.need = prefix;
          this.lastConsumed = 0;
          if (buf.length - off >= prefix) return this.inspect(buf, off);
          return undefined;
        }
        const topicLength = this.publishTopicLength;
        const v = checkTopic(buf, off + 2, topicLength, this.limits, false);
        if (v) return this.violation(v);
        if (qos > 0 && buf.readUInt16BE(off + 2 + topicLength) === 0) {
          return this.violation('QoS 1/2 PUBLISH with packet id 0 [MQTT-2.3.1-1]');
        }
        this.lastConsumed = need;
        this.skip(this.remaining - need);
        return undefined;
      }
      case CONNECT: {
        const v = this.checkConnect(buf.subarray(off, off + need));
        if (v instanceof Violation) return v;
        if (v) return this.violation(v);
        this.connected = true;
        break;
      }
      case SUBSCRIBE:
      case UNSUBSCRIBE: {
        const v = checkSubscription(buf.subarray(off, off + need), this.type === SUBSCRIBE, this.limits);
        if (v) return this.violation(v);
        break;
      }
    }
    this.lastConsumed = need;
    this.skip(this.remaining - need);
    return undefined;
  }

  private checkConnect(body: Buffer): string | Violation | undefined {
    const r = new Reader(body);
    const protocol = r.lengthPrefixed();
    if (!protocol) return 'truncated protocol name';
    const level = r.byte();
    const flags = r.byte();
    if (level === undefined || flags === undefined || r.skip(2) === undefined) return 'truncated variable header';
    const expected = PROTOCOL_LEVELS.get(protocol.toString('latin1'));
    // [MQTT-3.1.2-1]: another protocol name may be closed without a CONNACK
    if (expected === undefined) return 'unknown protocol name';
    if (level !== expected) {
      // [MQTT-3.1.2-2]; the rest of the packet is not read, its layout depends on the level (MQTT 5 adds properties)
      return new Violation(`protocol level ${level} is not supported (this broker speaks MQTT 3.1.1, level 4)`, 'CONNECT', UNACCEPTABLE_PROTOCOL_LEVEL);
    }
    if (flags & 0x01) return 'reserved CONNECT flag set [MQTT-3.1.2-3]';
    const will = (flags & 0x04) !== 0;
    const willQos = (flags >> 3) & 0b11;
    const willRetain = (flags & 0x20) !== 0;
    const hasPassword = (flags & 0x40) !== 0;
    const hasUsername = (flags & 0x80) !== 0;
    if (willQos === 3) return 'will QoS 3 [MQTT-3.1.2-14]';
    if (!will && (willQos !== 0 || willRetain)) return 'will QoS/retain set without a will [MQTT-3.1.2-11]';
    if (hasPassword && !hasUsername) return 'password without user name [MQTT-3.1.2-22]';
    const clientId = r.lengthPrefixed();
    if (!clientId) return 'truncated client id';
    const cv = checkString(clientId, 'client id', MAX_CLIENT_ID_BYTES);
    if (cv) return cv;
    this.clientId = clientId.toString('utf8');
    if (will) {
      const topic = r.lengthPrefixed();
      if (!topic) return 'truncated will topic';
      if (topic.length === 0) return 'empty will topic';
      const tv = checkTopic(topic, 0, topic.length, this.limits, false);
      if (tv) return `will topic: ${tv}`;
      if (!r.lengthPrefixed()) return 'truncated will message';
    }
    if (hasUsername) {
      const username = r.lengthPrefixed();
      if (!username) return 'truncated user name';
      const uv = checkString(username, 'user name', 1024);
      if (uv) return uv;
      this.username = username.toString('utf8');
    }
    if (hasPassword && !r.lengthPrefixed()) return 'truncated password';
    if (!r.atEnd()) return 'trailing bytes after the CONNECT payload';
    return undefined;
  }
}

/** Bounds-checked reader over one packet body. */
class Reader {
  private pos = 0;
  constructor(private readonly buf: Buffer) {}
  byte(): number | undefined {
    return this.pos < this.buf.length ? this.buf[this.pos++] : undefined;
  }
  skip(n: number): true | undefined {
    if (this.pos + n > this.buf.length) return undefined;
    this.pos += n;
    return true;
  }
  uint16(): number | undefined {
    if (this.pos + 2 > this.buf.length) return undefined;
    const v = this.buf.readUInt16BE(this.pos);
    this.pos += 2;
    return v;
  }
  lengthPrefixed(): Buffer | undefined {
    const n = this.uint16();
    if (n === undefined || this.pos + n > this.buf.length) return undefined;
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
  atEnd(): boolean {
    return this.pos === this.buf.length;
  }
}

/**
 * UTF-8 strings of the protocol (client ids, user names) [MQTT-1.5.3-1], [MQTT-1.5.3-2]. Control
 * characters U+0001–U+001F and U+007F–U+009F "SHOULD NOT" appear and a receiver "MAY treat
 * [them] as malformed" [MQTT-1.5.3]: we do, so none reaches a log line, a terminal or an id.
 */
function checkString(s: Buffer, what: string, maxBytes: number): string | undefined {
  if (s.length > maxBytes) return `${what} of ${s.length} bytes is over the ${maxBytes}-byte limit`;
  for (let i = 0; i < s.length; i++) {
    const c = controlCharacterAt(s, i, s.length);
    if (c) return `${what} contains ${c}`;
  }
  if (!isUtf8(s)) return `${what} is not valid UTF-8 [MQTT-1.5.3-1]`;
  return undefined;
}

/**
 * Names the control character whose encoding starts at buf[i], if any: U+0000 (MUST NOT,
 * [MQTT-1.5.3-2]), C0 controls and DEL (one byte), C1 controls (0xC2 0x80–0x9F; 0xC2 is only
 * ever a lead byte in UTF-8, so this cannot misread the middle of another character).
 */
function controlCharacterAt(buf: Buffer, i: number, end: number): string | undefined {
  const b = buf[i]!;
  if (b === 0) return 'U+0000 [MQTT-1.5.3-2]';
  if (b < 0x20 || b === 0x7f) return `the control character U+00${hex2(b)} [MQTT-1.5.3]`;
  if (b === 0xc2 && i + 1 < end) {
    const next = buf[i + 1]!;
    if (next >= 0x80 && next <= 0x9f) return `the control character U+00${hex2(next)} [MQTT-1.5.3]`;
  }
  return undefined;
}

function hex2(n: number): string {
  return n.toString(16).toUpperCase().padStart(2, '0');
}

/**
 * Topic names (filter=false) and topic filters (filter=true) [MQTT-4.7]. One pass
 * over the bytes; UTF-8 is checked only when a non-ASCII byte is present.
 */
function checkTopic(buf: Buffer, off: number, length: number, limits: GuardLimits, filter: boolean): string | undefined {
  if (length > limits.maxTopicLength) return `topic of ${length} bytes is over the ${limits.maxTopicLength}-byte limit`;
  let levels = 1;
  let ascii = true;
  const end = off + length;
  for (let i = off; i < end; i++) {
    const b = buf[i]!;
    if (b === 0x2f) {
      if (++levels > limits.maxTopicLevels) return `topic has more than ${limits.maxTopicLevels} levels`;
    } else if (b === 0) {
      return 'topic contains U+0000 [MQTT-4.7.3-2]';
    } else if (b < 0x20 || b === 0x7f || b === 0xc2) {
      const c = controlCharacterAt(buf, i, end);
      if (c) return `topic contains ${c}`;
      if (b === 0xc2) ascii = false;
    } else if (b === 0x2b || b === 0x23) {
      if (!filter) return 'wildcard in a topic name [MQTT-3.3.2-2]';
      // '+' and '#' occupy a whole level; '#' only the last [MQTT-4.7.1-2], [MQTT-4.7.1-3]
      const before = i === off ? 0x2f : buf[i - 1];
      const after = i === end - 1 ? 0x2f : buf[i + 1];
      if (before !== 0x2f || after !== 0x2f) return 'wildcard must occupy a whole topic level';
      if (b === 0x23 && i !== end - 1) return "'#' must be the last level of a filter";
    } else if (b >= 0x80) {
      ascii = false;
    }
  }
  if (!ascii && !isUtf8(buf.subarray(off, end))) return 'topic is not valid UTF-8 [MQTT-1.5.3-1]';
  return undefined;
}

function checkSubscription(body: Buffer, subscribe: boolean, limits: GuardLimits): string | undefined {
  const r = new Reader(body);
  const packetId = r.uint16();
  if (packetId === undefined) return 'truncated packet id';
  if (packetId === 0) return 'packet id 0 [MQTT-2.3.1-1]';
  let count = 0;
  while (!r.atEnd()) {
    const filter = r.lengthPrefixed();
    if (!filter) return 'truncated topic filter';
    if (filter.length === 0) return 'empty topic filter [MQTT-4.7.3-1]';
    const v = checkTopic(filter, 0, filter.length, limits, true);
    if (v) return v;
    if (subscribe) {
      const qos = r.byte();
      if (qos === undefined) return 'truncated requested QoS';
      if (qos > 2) return `requested QoS byte 0x${qos.toString(16)} is invalid [MQTT-3.8.3-4]`;
    }
    if (++count > MAX_FILTERS_PER_PACKET) return `more than ${MAX_FILTERS_PER_PACKET} topic filters in one packet`;
  }
  if (count === 0) return 'no topic filters [MQTT-3.8.3-3]';
  return undefined;
}

/**
 * Puts `guard` in front of `stream`'s readable side without another stream layer: every
 * chunk the transport delivers (Readable.push) is checked before it is queued for Aedes.
 * Writes go straight to the transport. Returns the same stream.
 */
export function guardStream<S extends Duplex>(stream: S, guard: PacketGuard, onViolation: (v: Violation) => void): S {
  const push = stream.push;
  let violated = false;
  stream.push = function guardedPush(this: S, chunk: unknown, encoding?: BufferEncoding): boolean {
    if (violated) return false;
    if (chunk !== null && chunk !== undefined) {
      const v = guard.feed(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as Uint8Array));
      if (v) {
        violated = true;
        onViolation(v);
        if (v.connack === undefined) {
          // [MQTT-4.8.0-1]: close the network connection, send nothing
          stream.destroy();
        } else {
          // [MQTT-3.2.2-5]: a CONNACK with a non-zero return code, then close; Aedes never saw the CONNECT
          stream.write(Buffer.from([0x20, 0x02, 0x00, v.connack]), () => stream.destroy());
        }
        return false;
      }
    }
    return push.call(this, chunk, encoding);
  };
  return stream;
}
