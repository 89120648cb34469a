/** The Mosquitto side of the protocol's access rules, and Mosquitto's own password hash, made here (pure). */
import { describe, expect, it } from '@jest/globals';
import { publishGrants, subscribeGrants, topics } from '@edgefleet/protocol';
import { aclFile, roleAcls } from '../src/broker-setup/acl.js';
import { findDynsecPlugin } from '../src/broker-setup/mosquitto-files.js';
import { mosquittoHash, passwdLine } from '../src/broker-setup/passwords.js';

describe('Mosquitto accounts from the protocol', () => {
  it("gives a device's role exactly its publish and subscribe grants, nothing else", () => {
    const who = { role: 'device' as const, id: 'pi-1', groups: ['lab', 'field'] };
    const acls = roleAcls(who, 'hello');
    expect(acls.filter((a) => a.acltype === 'publishClientSend').map((a) => a.topic)).toEqual(publishGrants(who, { legacyTopic: 'hello' }));
    expect(acls.filter((a) => a.acltype === 'subscribePattern').map((a) => a.topic)).toEqual(subscribeGrants(who, { legacyTopic: 'hello' }));
    expect(acls.filter((a) => a.acltype === 'publishClientReceive').map((a) => a.topic)).toEqual(subscribeGrants(who, { legacyTopic: 'hello' }));
    expect(acls.every((a) => a.allow)).toBe(true);
    expect(acls.some((a) => a.topic.includes('pi-2') || a.topic === '#')).toBe(false);
    expect(roleAcls(who).some((a) => a.topic === 'hello')).toBe(false); // the legacy topic only when it is on
  });

  it('writes an ACL file with a section per device, read-only where it only subscribes', () => {
    const text = aclFile('admin', [{ id: 'pi-1', groups: ['lab'] }], 'hello');
    expect(text).toContain('user admin\ntopic readwrite fleet/v1/#\ntopic readwrite hello\ntopic read $SYS/#');
    expect(text).toContain(`user pi-1\ntopic write ${topics.device('pi-1', 'status')}`);
    expect(text).toContain(`topic read ${topics.group('lab', 'commands')}`);
    const device = text.split('user pi-1')[1]!;
    expect(device).toContain('topic read hello'); // devices hear the legacy topic, never speak on it
    expect(device).not.toMatch(/topic (write|readwrite) hello/);
  });

  it("hashes as mosquitto_passwd does (PBKDF2-SHA512, 101 rounds): the same salt gives mosquitto_passwd's line", () => {
    // written by Debian's mosquitto_passwd 2.0.11: `mosquitto_passwd -b pw alice wonder`
    const line = 'alice:$7$101$WNbHiMo3qV00kvfO$/ejIZ8b6ra+rxTh8B5pRAd6rXYk3wmy73RTyVK+YdXSr1fWjJ8DI7WMMUmrHDSCZILGPN4+jOkjpyalNDuu0mQ==';
    expect(passwdLine('alice', 'wonder', Buffer.from('WNbHiMo3qV00kvfO', 'base64'))).toBe(line);
    const a = mosquittoHash('x');
    const b = mosquittoHash('x');
    expect(a.salt).not.toBe(b.salt); // a fresh salt each time
    expect(Buffer.from(a.salt, 'base64')).toHaveLength(12);
  });

  it("finds the plugin in Debian's multiarch directory for the machine", () => {
    const seen: string[] = [];
    const arm = findDynsecPlugin('arm64', (p) => (seen.push(p), p === '/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so'));
    expect(arm).toEqual({ path: '/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so', found: true });
    expect(findDynsecPlugin('arm', () => false)).toEqual({ path: '/usr/lib/arm-linux-gnueabihf/mosquitto_dynamic_security.so', found: false });
  });
});
