/**
 * What one instance of a cluster (broker instances sharing one Redis) does beyond Aedes'
 * Redis persistence and emitter, so that the instances act as one broker:
 *
 * - **Acknowledged means stored.** Aedes sends a QoS 1 PUBACK before it stores and forwards
 *   the message; an instance killed in between would lose a message its client saw
 *   acknowledged. Here the publisher's outgoing bytes are held (corked) from the moment its
 *   QoS 1 PUBLISH is authorized until Aedes has stored it for offline subscribers and handed
 *   it to Redis (the `published` hook), so the PUBACK leaves only then.
 * - **A will belongs to the client's latest connection.** Each instance records which
 *   instance a client last connected to (one Redis hash). A will is published only by that
 *   instance: not by an instance whose connection was taken over by another instance (it
 *   would land after the device's own "online"), and not from the wills of a dead instance
 *   (Aedes publishes those minutes later) once the device has reconnected elsewhere; those
 *   wills are deleted instead.
 */
import type { Aedes, AedesOptions, Client } from 'aedes';
import type { Logger } from 'pino';

/** Redis hash: client id -> id of the instance that holds its latest connection. */
export const LATEST_CONNECTION_KEY = 'edgefleet:latest-connection';

export interface ClusterRedis {
  hset(key: string, field: string, value: string): Promise<unknown>;
  hget(key: string, field: string): Promise<string | null>;
}

interface StoredWill {
  clientId: string;
  brokerId: string;
}

interface WillStore {
  streamWill(brokers: unknown): AsyncIterable<StoredWill>;
  /** Aedes calls it with a will's { id, brokerId }, and with a connecting Client (whose brokerId is undefined). */
  delWill(client: { id: string; brokerId: string }): Promise<unknown>;
}

export class ClusterMember {
  constructor(
    private readonly redis: ClusterRedis,
    readonly brokerId: string,
    private readonly log: Logger,
  ) {}

  /** Records this instance as the holder of each new connection. */
  attach(aedes: Aedes): void {
    aedes.on('client', (client: Client) => {
      this.redis.hset(LATEST_CONNECTION_KEY, client.id, this.brokerId).catch((err: Error) => this.log.error({ clientId: client.id, err: err.message }, 'cannot record a connection in Redis'));
    });
  }

  /** True unless the client's latest connection is known to be on another instance than `brokerId`. */
  async isLatest(clientId: string, brokerId: string): Promise<boolean> {
    try {
      const latest = await this.redis.hget(LATEST_CONNECTION_KEY, clientId);
      return latest === null || latest === brokerId;
    } catch (err) {
      // Redis unreachable: publish the will, as a single broker would
      this.log.error({ clientId, err: (err as Error).message }, 'cannot read where a client is connected; publishing its will');
      return true;
    }
  }

  /**
   * The persistence, with the wills of dead instances filtered: those whose client connected
   * again elsewhere are deleted, not published. The ones published lose the dead instance's id:
   * Aedes would republish them under it with this instance's message counter, and subscribers
   * that saw later messages of the dead instance would drop them as duplicates. Aedes deletes
   * a will by that id once it is published, so `delWill` puts it back.
   */
  freshWills<P extends object>(persistence: P): P {
    const store = persistence as unknown as WillStore;
    const member = this;
    const streamWill = store.streamWill.bind(store);
    const delWill = store.delWill.bind(store);
    /** Client id -> the dead instance whose will for it is being published. */
    const publishing = new Map<string, string>();
    async function* fresh(brokers: unknown): AsyncGenerator<StoredWill> {
      for await (const will of streamWill(brokers)) {
        if (await member.isLatest(will.clientId, will.brokerId)) {
          publishing.set(will.clientId, will.brokerId);
          delete (will as Partial<StoredWill>).brokerId;
          yield will;
          continue;
        }
        await delWill({ id: will.clientId, brokerId: will.brokerId });
        member.log.info({ clientId: will.clientId, deadInstance: will.brokerId }, 'dropped the will of a dead instance: its client connected again elsewhere');
      }
    }
    const del = (client: { id: string; brokerId?: string }) => {
      const owner = client.brokerId ?? publishing.get(client.id);
      publishing.delete(client.id);
      return delWill({ id: client.id, brokerId: owner as string });
    };
    return new Proxy(persistence, {
      get: (target, prop) => (prop === 'streamWill' ? fresh : prop === 'delWill' ? del : Reflect.get(target, prop, target)),
    });
  }

  /**
   * Wraps the authorizePublish hook (QoS 1: hold the acknowledgement; a closing client's will:
   * only from its latest connection) and adds the `published` hook that releases the hold.
   */
  hooks(authorizePublish: NonNullable<AedesOptions['authorizePublish']>): Pick<AedesOptions, 'authorizePublish' | 'published'> {
    const held = new WeakMap<Client, number>();
    return {
      authorizePublish: (client, packet, done) => {
        authorizePublish(client, packet, (err) => {
          if (err || !client) return done(err);
          // Aedes authorizes a will when the connection has closed (client.closed): the will is
          // this instance's to publish only if the client did not connect again elsewhere
          if (client.closed) {
            this.isLatest(client.id, this.brokerId).then((latest) => {
              if (latest) return done(null);
              this.log.info({ clientId: client.id }, 'will not published: its client connected again on another instance');
              done(new Error('superseded by a newer connection on another instance')); // Aedes then deletes the will
            }, done);
            return;
          }
          // only the client's own PUBLISH carries a packet id (a will swept from a dead instance does not)
          if (packet.qos === 1 && typeof packet.messageId === 'number') {
            client.conn.cork(); // the PUBACK Aedes writes next waits in the socket until `published`
            held.set(client, (held.get(client) ?? 0) + 1);
          }
          done(null);
        });
      },
      published: (packet, client, done) => {
        const holds = client ? (held.get(client) ?? 0) : 0;
        if (holds > 0 && packet.qos === 1) {
          held.set(client, holds - 1);
          client.conn.uncork();
        }
        done(null);
      },
    };
  }
}
