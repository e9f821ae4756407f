/**
 * What a certificate's bytes fix (its identity, its fingerprints), computed once per certificate: a
 * daemon sees the same few peers on every call, and parsing or hashing one was most of an authorized
 * call's CPU. Keyed by the bytes themselves (base64), so an entry never goes stale; bounded — the map
 * is emptied when it reaches `size` entries.
 */
export function memoByDer<T>(size: number, compute: (der: Buffer) => T): (der: Buffer) => T {
  const memo = new Map<string, T>();
  return (der) => {
    const key = der.toString("base64");
    const known = memo.get(key);
    if (known !== undefined || memo.has(key)) return known as T;
    const value = compute(der);
    if (memo.size >= size) memo.clear();
    memo.set(key, value);
    return value;
  };
}
