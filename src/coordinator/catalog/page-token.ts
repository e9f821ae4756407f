/**
 * Page tokens of the catalog's listings: an opaque base64url of "o:<offset>". Only what encodeToken makes
 * is accepted back; anything else is a RangeError (the caller's mistake → INVALID_ARGUMENT, see
 * ../validate.ts page()), never an SQL error.
 */
import type { Page } from "./catalog";

/**
 * A page token's offset. Only what encodeToken makes is accepted ("o:" and at most 15 digits): anything
 * else — "o:1e21", "o:-1", garbage — is the caller's mistake (RangeError → INVALID_ARGUMENT, see
 * validate.ts page()), never an SQL error.
 */
export function decodeToken(token: string): number {
  if (!token) return 0;
  const m = /^o:(\d{1,15})$/.exec(Buffer.from(token, "base64url").toString("utf8"));
  const n = m ? Number(m[1]) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError("page_token is not one this server issued");
  return n;
}

export const encodeToken = (offset: number): string => Buffer.from(`o:${offset}`, "utf8").toString("base64url");

/** A page from rows fetched with LIMIT pageSize + 1 OFFSET offset (the extra row says there is more). */
export function page<T>(rows: { doc: string }[], pageSize: number, offset: number, parse: (s: string) => T): Page<T> {
  const more = rows.length > pageSize;
  return {
    items: rows.slice(0, pageSize).map((r) => parse(r.doc)),
    next: more ? encodeToken(offset + pageSize) : "",
  };
}
