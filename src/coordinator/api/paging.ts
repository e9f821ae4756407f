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
  let total = 0;
  for (const [i, item] of p.items.entries()) {
    total += bytesOf(item);
    if (total > budget && i > 0) return v.page(() => list(i));
  }
  return p;
}
