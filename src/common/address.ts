/** "host:port" and "[v6]:port" addresses. */
export function splitHostPort(addr: string): [string, string] {
  const i = addr.lastIndexOf(":");
  if (i < 0) throw new Error(`address "${addr}" must be host:port`);
  return [addr.slice(0, i), addr.slice(i + 1)];
}

/** One address: [v1:|v2:|any:]IPv4:PORT/NONCE or [v1:|v2:|any:][IPv6]:PORT/NONCE; the nonce is group 1. */
const CLIENT_ADDR = /^(?:(?:v1|v2|any):)?(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:.]+\]):\d{1,5}\/(\d{1,10})$/;

/**
 * Whether `s` names Ceph client instances as librados reports its own (`rados_getaddrs`): one address
 * IP:PORT/NONCE (with a v1:/v2: prefix or not), or a bracketed list of such, every nonce nonzero. A
 * zero nonce with port 0 ("IP:0/0") is how Ceph blocklists every client of a host: an agent's own
 * address never looks like that, so an address that does is refused rather than blocklisted.
 */
export function isClientAddr(s: string): boolean {
  if (s.length === 0 || s.length > 1024) return false;
  const vector = /^\[(?:v1|v2|any):/.test(s) && s.endsWith("]");
  const parts = vector ? s.slice(1, -1).split(",") : [s];
  return parts.every((p) => {
    const m = CLIENT_ADDR.exec(p);
    return m !== null && Number(m[1]) !== 0;
  });
}

/**
 * The client instances an address names, as "IP/NONCE" (the port and the v1:/v2: prefix dropped: one
 * client's v1 and v2 addresses, and a watcher's address as librbd lists it, name the same instance).
 * `s` is one address or a bracketed list (rados_getaddrs); anything unparsable names none.
 */
export function clientInstances(s: string): Set<string> {
  const vector = s.startsWith("[") && s.endsWith("]") && /^\[(?:v1|v2|any):/.test(s);
  const parts = vector ? s.slice(1, -1).split(",") : [s];
  const out = new Set<string>();
  for (const p of parts) {
    const m = /^(?:(?:v1|v2|any):)?(\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:.]+\]):\d{1,5}\/(\d{1,10})$/.exec(p.trim());
    if (m) out.add(`${m[1]}/${m[2]}`);
  }
  return out;
}

/** Whether two addresses name the same client instance (see clientInstances). */
export function sameClientInstance(a: string, b: string): boolean {
  const mine = clientInstances(b);
  for (const x of clientInstances(a)) if (mine.has(x)) return true;
  return false;
}
