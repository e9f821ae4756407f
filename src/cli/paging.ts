/** Paged list calls: one page, or every page (--all) following next_page_token. */
import { ExitCode } from "./exit-codes";
import { note, print, printJson } from "./output";

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

/** How a list verb prints its items: the JSON field, one item as JSON, the table, and the noun. */
export interface ListOutput<T> {
  field: string;
  toJSON: (item: T) => unknown;
  table: (items: T[]) => string;
  noun: string;
}

/**
 * A list verb's whole output: one page (or every page with --all) from `--page-token`, as JSON
 * (`{<field>: [...], nextPageToken}`) or as a table with a note naming the next page token.
 */
export async function listPages<T>(
  values: { json?: boolean; all?: boolean; "page-token"?: string },
  fetchPage: (pageToken: string) => Promise<Page<T>>,
  out: ListOutput<T>,
): Promise<number> {
  const page = await fetchPages(fetchPage, values["page-token"] ?? "", values.all === true);
  if (values.json) {
    printJson({ [out.field]: page.items.map(out.toJSON), nextPageToken: page.next });
  } else {
    print(out.table(page.items));
    if (page.next) note(`more ${out.noun}: --page-token ${page.next} (or --all)`);
  }
  return ExitCode.Ok;
}
