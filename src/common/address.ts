/** "host:port" and "[v6]:port" addresses. */
export function splitHostPort(addr: string): [string, string] {
  const i = addr.lastIndexOf(":");
  if (i < 0) throw new Error(`address "${addr}" must be host:port`);
  return [addr.slice(0, i), addr.slice(i + 1)];
}
