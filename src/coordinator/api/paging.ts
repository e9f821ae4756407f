/**
 * Listing pages bounded by their bytes as well as their count. A page of page_size items can be large:
 * a backup may carry 64 metadata values of 4096 characters (~280 KB), a job carries its backup, a policy
 * its metadata templates — and gRPC clients (grpc-js, grpcio, the CLI) refuse an answer above 4 MiB
 * unless told otherwise (RESOURCE_EXHAUSTED "Received message larger than max", with no way to page past
 * it but guessing a smaller page_size). So a page stops once its items pass PAGE_BYTES (never before
 * its first item), and next_page_token goes on right after the last one given: a short page, which the
 * proto says a client must expect.
 */
import type { Page } from "../catalog/catalog";
import * as v from "../validate";

/** Below the 4 MiB a default client accepts, with room for the rest of the answer. */
export const PAGE_BYTES = 3 << 20;

/**
 * `list(n)` pages of n items from the same token; `bytesOf` an item's encoded size. Over budget, the
 * page is asked again with the count that fits (so its token is the catalog's own, after that item).
 */
export function boundedPage<T>(
  list: (size: number) => Page<T>,
  size: number,
  bytesOf: (item: T) => number,
  budget = PAGE_BYTES,
): Page<T> {
  const p = v.page(() => list(size));
  const fit = itemsThatFit(p.items, bytesOf, 0, true, budget);
  return fit.count < p.items.length ? v.page(() => list(fit.count)) : p;
}

/**
 * How many of `items` a page takes after `used` bytes: up to the first that would pass the budget,
 * which starts the next page — never the page's very first item (`first`: items[0] would be it), so
 * every page holds one. `bytes`: what the items taken add.
 */
export function itemsThatFit<T>(
  items: T[],
  bytesOf: (item: T) => number,
  used: number,
  first: boolean,
  budget = PAGE_BYTES,
): { count: number; bytes: number } {
  let bytes = 0;
  for (const [i, item] of items.entries()) {
    const b = bytesOf(item);
    if (used + bytes + b > budget && !(first && i === 0)) return { count: i, bytes };
    bytes += b;
  }
  return { count: items.length, bytes };
}

/** An item's encoded size, by its (ts-proto) message type: the bytesOf of a listing of it. */
export const encodedSize =
  <T>(type: { encode(m: T): { finish(): Uint8Array } }) =>
  (m: T): number =>
    type.encode(m).finish().length;
