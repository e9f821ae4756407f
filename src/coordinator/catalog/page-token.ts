/**
 * Page tokens of the catalog's listings: keyset, not offsets. A token names the last item of the page
 * it ended, and the next page starts strictly after it in the listing's order, so an item that exists
 * throughout a paged listing is never skipped nor repeated, whatever is created or deleted between pages.
 * Tokens are opaque — encrypted and authenticated with a key derived from the catalog's paging key
 * (AES-256-GCM, the listing's scope — its name and filter — as associated data): what a token names
 * (the last item of an unfiltered page: an id, a volume, a time) is nobody's to read, which matters when
 * a scoped client's listing is filtered after the catalog's page (api/scoped.ts). A token altered, made by
 * another catalog or used with another filter is a RangeError (the caller's mistake → INVALID_ARGUMENT,
 * see ../validate.ts page()), never an SQL error.
 *
 *  - Backups and jobs: ordered (created_at DESC, id DESC); next page `WHERE (created_at, id) < (:c, :i)
 *    ORDER BY created_at DESC, id DESC LIMIT n + 1` (row comparison; SQLite and PostgreSQL both have it).
 *    Token = base64url(nonce ‖ AES-256-GCM(JSON {c, i})) "." base64url(GCM tag), nonce random (12 bytes).
 *  - Listings ordered by unique text keys (policies by name; protection records by (policy, volume key)):
 *    the same, with payload JSON {k: [key, …]} and `WHERE (a, b) > (:k0, :k1)` ascending.
 */
import { createCipheriv, createDecipheriv, createHmac, randomBytes } from "node:crypto";
import type { Page } from "./catalog";

/** Where a keyset page starts: just after the item with this (created_at, id). */
export interface KeysetPosition {
  createdAt: number;
  id: string;
}

/** The token cipher's key: the paging key's, for this use only. */
const cipherKey = (key: Buffer) => createHmac("sha256", key).update("rbdbackup page token cipher").digest();

const sign = (key: Buffer, scope: string, value: unknown): string => {
  const nonce = randomBytes(12);
  const c = createCipheriv("aes-256-gcm", cipherKey(key), nonce);
  c.setAAD(Buffer.from(scope, "utf8"));
  const body = Buffer.concat([nonce, c.update(JSON.stringify(value), "utf8"), c.final()]);
  return `${body.toString("base64url")}.${c.getAuthTag().toString("base64url")}`;
};

const notOurs = () =>
  new RangeError("page_token is not one this server issued for this listing (altered, or another filter)");

/** The JSON a token carries, once its signature is checked for this key and scope. */
function verify(key: Buffer, scope: string, token: string, maxLength: number): unknown {
  if (token.length > maxLength) throw notOurs();
  const [payload, sig, extra] = token.split(".");
  if (!payload || !sig || extra !== undefined) throw notOurs();
  const body = Buffer.from(payload, "base64url");
  const tag = Buffer.from(sig, "base64url");
  if (body.length < 13 || tag.length !== 16) throw notOurs();
  try {
    const d = createDecipheriv("aes-256-gcm", cipherKey(key), body.subarray(0, 12));
    d.setAAD(Buffer.from(scope, "utf8"));
    d.setAuthTag(tag);
    const text = Buffer.concat([d.update(body.subarray(12)), d.final()]).toString("utf8");
    return JSON.parse(text);
  } catch {
    throw notOurs();
  }
}

export function encodePageToken(key: Buffer, scope: string, pos: KeysetPosition): string {
  return sign(key, scope, { c: pos.createdAt, i: pos.id });
}

/** The position a token names; undefined for "" (the first page); RangeError for anything not ours. */
export function decodePageToken(key: Buffer, scope: string, token: string): KeysetPosition | undefined {
  if (!token) return undefined;
  const { c, i } = (verify(key, scope, token, 512) ?? {}) as { c?: unknown; i?: unknown };
  if (typeof c !== "number" || !Number.isSafeInteger(c) || typeof i !== "string" || i.length > 128) throw notOurs();
  return { createdAt: c, id: i };
}

/** A keyset page from rows fetched with LIMIT pageSize + 1 (the extra row says there is more). */
export function keysetPage<R, T>(
  rows: R[],
  pageSize: number,
  parse: (r: R) => T,
  positionOf: (r: R) => KeysetPosition,
  key: Buffer,
  scope: string,
): Page<T> {
  const more = rows.length > pageSize;
  const items = rows.slice(0, pageSize);
  const last = items[items.length - 1];
  return { items: items.map(parse), next: more && last ? encodePageToken(key, scope, positionOf(last)) : "" };
}

/** A token for listings ordered by `arity` unique text keys (ascending): the last item's keys. */
export function encodeKeyToken(key: Buffer, scope: string, keys: string[]): string {
  return sign(key, scope, { k: keys });
}

/** The keys a key token names; undefined for ""; RangeError for anything not ours or of another arity. */
export function decodeKeyToken(key: Buffer, scope: string, token: string, arity: number): string[] | undefined {
  if (!token) return undefined;
  const { k } = (verify(key, scope, token, 4096) ?? {}) as { k?: unknown };
  if (!Array.isArray(k) || k.length !== arity || !k.every((x) => typeof x === "string")) throw notOurs();
  return k as string[];
}

/** A page of a key-ordered listing from rows fetched with LIMIT pageSize + 1. */
export function keyPage<R, T>(
  rows: R[],
  pageSize: number,
  parse: (r: R) => T,
  keysOf: (r: R) => string[],
  key: Buffer,
  scope: string,
): Page<T> {
  const more = rows.length > pageSize;
  const items = rows.slice(0, pageSize);
  const last = items[items.length - 1];
  return { items: items.map(parse), next: more && last ? encodeKeyToken(key, scope, keysOf(last)) : "" };
}

/**
 * The scope of a listing's tokens: its name and its filter, canonical (keys sorted; empty values — "",
 * undefined, false, 0 (an enum's UNSPECIFIED) and [] — dropped, as the listings ignore them).
 */
export function pageScope(listing: string, filter: object): string {
  const entries = Object.entries(filter)
    .filter(([, v]) => v !== undefined && v !== "" && v !== false && v !== 0 && !(Array.isArray(v) && v.length === 0))
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `${listing}|${JSON.stringify(Object.fromEntries(entries))}`;
}
