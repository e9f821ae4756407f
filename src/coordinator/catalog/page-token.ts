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

// ── Keyset page tokens (issue 15: stable paging; replaces the offsets above) ───────────────────────────
// A listing is ordered by (created_at DESC, id DESC); a page token names the last item of the previous
// page, and the next page is `WHERE (created_at, id) < (:c, :i) ORDER BY created_at DESC, id DESC LIMIT
// n + 1` (row comparison; SQLite and PostgreSQL both have it). So an item that exists throughout a paged
// listing is never skipped nor repeated, whatever is created or deleted between pages.
// Token = base64url(JSON {c, i}) "." base64url(HMAC-SHA256(catalog.pagingKey, scope "\n" payload)[0..16)),
// where scope names the listing and its filter (e.g. `backups|{"cluster":"site-a"}`): a token altered,
// made by another catalog or used with another filter is a RangeError (→ INVALID_ARGUMENT).

import { createHmac, timingSafeEqual } from "node:crypto";

/** Where a keyset page starts: just after the item with this (created_at, id). */
export interface KeysetPosition {
  createdAt: number;
  id: string;
}

const mac = (key: Buffer, scope: string, payload: string) =>
  createHmac("sha256", key).update(scope).update("\n").update(payload).digest().subarray(0, 16);

export function encodePageToken(key: Buffer, scope: string, pos: KeysetPosition): string {
  const payload = Buffer.from(JSON.stringify({ c: pos.createdAt, i: pos.id }), "utf8").toString("base64url");
  return `${payload}.${mac(key, scope, payload).toString("base64url")}`;
}

/** The position a token names; undefined for "" (the first page); RangeError for anything not ours. */
export function decodePageToken(key: Buffer, scope: string, token: string): KeysetPosition | undefined {
  if (!token) return undefined;
  const bad = () =>
    new RangeError("page_token is not one this server issued for this listing (altered, or another filter)");
  if (token.length > 512) throw bad();
  const [payload, sig, extra] = token.split(".");
  if (!payload || !sig || extra !== undefined) throw bad();
  const want = mac(key, scope, payload);
  const got = Buffer.from(sig, "base64url");
  if (got.length !== want.length || !timingSafeEqual(got, want)) throw bad();
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(payload, "base64url").toString("utf8"));
  } catch {
    throw bad();
  }
  const { c, i } = (v ?? {}) as { c?: unknown; i?: unknown };
  if (typeof c !== "number" || !Number.isSafeInteger(c) || typeof i !== "string" || i.length > 128) throw bad();
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

/** The scope of a listing's tokens: its name and its filter, canonical (keys sorted, empty values dropped). */
export function pageScope(listing: string, filter: object): string {
  const entries = Object.entries(filter)
    .filter(([, v]) => v !== undefined && v !== "" && v !== false && !(Array.isArray(v) && v.length === 0))
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `${listing}|${JSON.stringify(Object.fromEntries(entries))}`;
}
