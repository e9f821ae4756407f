/** Paged list calls: one page, or every page (--all) following next_page_token. */

export interface Page<T> {
  items: T[];
  /** Empty on the last page. */
  next: string;
}

/** Fetches from `start` (a page token, "" = the first page): one page, or every page when `all`. */
export async function fetchPages<T>(
  fetchPage: (pageToken: string) => Promise<Page<T>>,
  start: string,
  all: boolean,
): Promise<Page<T>> {
  const items: T[] = [];
  const seen = new Set<string>();
  let token = start;
  for (;;) {
    const page = await fetchPage(token);
    items.push(...page.items);
    if (!all || page.next === "") return { items, next: page.next };
    if (seen.has(page.next)) throw new Error(`the server returned page token "${page.next}" twice`);
    seen.add(page.next);
    token = page.next;
  }
}
