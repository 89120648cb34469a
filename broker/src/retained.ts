/**
 * Retained messages by topic level, for the in-memory persistence. aedes-persistence keeps
 * them in one Map and tests every retained topic against each filter of every SUBSCRIBE:
 * with a retained presence per device that is O(fleet) per subscription, O(fleet²) for a
 * fleet that (re)connects, and it made connecting slower with every device connected (at
 * 5,000 devices most of the broker's time went to matching topics). Here a filter walks
 * the levels it names: a device's own filters (`…/devices/<id>/commands`,
 * `…/devices/<id>/transfers/#`) look at its own subtree only, `…/devices/+/status` at every
 * device's status once.
 *
 * Matching follows MQTT 3.1.1 [MQTT-4.7.1]: `+` one level, `#` the parent level and every
 * level below; a filter starting with a wildcard matches no topic starting with `$`
 * [MQTT-4.7.2-1].
 */
import { createRequire } from 'node:module';
import { Readable } from 'node:stream';

export interface RetainedPacket {
  topic: string;
  payload: Buffer;
  [key: string]: unknown;
}

interface Node {
  children: Map<string, Node>;
  packet: RetainedPacket | undefined;
}

const node = (): Node => ({ children: new Map(), packet: undefined });

export class RetainedIndex {
  readonly #root = node();
  #size = 0;

  get size(): number {
    return this.#size;
  }

  /** Stores a retained message; an empty payload deletes the topic's [MQTT-3.3.1-10]. */
  store(packet: RetainedPacket): void {
    const levels = packet.topic.split('/');
    if (packet.payload.length === 0) {
      this.#delete(this.#root, levels, 0);
      return;
    }
    let n = this.#root;
    for (const level of levels) {
      let next = n.children.get(level);
      if (!next) n.children.set(level, (next = node()));
      n = next;
    }
    if (!n.packet) this.#size++;
    n.packet = { ...packet };
  }

  /** Removes the topic's message and the nodes left empty; true when something was removed. */
  #delete(n: Node, levels: string[], i: number): boolean {
    if (i === levels.length) {
      if (!n.packet) return false;
      n.packet = undefined;
      this.#size--;
      return true;
    }
    const child = n.children.get(levels[i]!);
    if (!child || !this.#delete(child, levels, i + 1)) return false;
    if (!child.packet && child.children.size === 0) n.children.delete(levels[i]!);
    return true;
  }

  /** Every retained message whose topic matches `filter`. */
  *match(filter: string): Generator<RetainedPacket> {
    yield* this.#walk(this.#root, filter.split('/'), 0, true);
  }

  *#walk(n: Node, levels: string[], i: number, first: boolean): Generator<RetainedPacket> {
    if (i === levels.length) {
      if (n.packet) yield n.packet;
      return;
    }
    const level = levels[i]!;
    if (level === '#') {
      // `a/#` matches `a` itself and everything below
      yield* this.#all(n, first);
      return;
    }
    if (level === '+') {
      for (const [name, child] of n.children) if (!(first && name.startsWith('$'))) yield* this.#walk(child, levels, i + 1, false);
      return;
    }
    const child = n.children.get(level);
    if (child) yield* this.#walk(child, levels, i + 1, false);
  }

  *#all(n: Node, first: boolean): Generator<RetainedPacket> {
    if (n.packet && !first) yield n.packet;
    for (const [name, child] of n.children) {
      if (first && name.startsWith('$')) continue;
      yield* this.#allBelow(child);
    }
  }

  *#allBelow(n: Node): Generator<RetainedPacket> {
    if (n.packet) yield n.packet;
    for (const child of n.children.values()) yield* this.#allBelow(child);
  }
}

type MemoryPersistenceClass = new (opts?: object) => object;

/**
 * aedes-persistence's in-memory store with its retained messages in a RetainedIndex. Aedes
 * 1.x awaits these methods as promises: the async class, not the callback wrapper.
 */
export function indexedMemoryPersistence(): object {
  const require = createRequire(import.meta.url);
  const MemoryPersistence = require('aedes-persistence/asyncPersistence.js') as MemoryPersistenceClass;
  class IndexedMemoryPersistence extends MemoryPersistence {
    readonly retained = new RetainedIndex();
    async storeRetained(packet: RetainedPacket): Promise<void> {
      this.retained.store(packet);
    }
    createRetainedStream(filter: string): Readable {
      return Readable.from(this.retained.match(filter));
    }
    createRetainedStreamCombi(filters: string[]): Readable {
      const index = this.retained;
      return Readable.from(
        (function* all() {
          for (const f of filters) yield* index.match(f);
        })(),
      );
    }
  }
  return new IndexedMemoryPersistence();
}
