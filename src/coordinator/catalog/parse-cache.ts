/**
 * Parsed records by id, each with the document text it was parsed from. A read whose row has the same
 * text gets a deep copy of that parse instead of parsing again (JSON.parse and the message's fromJSON
 * cost about four times a copy): callers may change what they get — the scheduler does, before it
 * writes a record back — so nothing they hold is shared. A row whose text differs is parsed afresh, so
 * an entry is never stale. Bounded: the least recently used entries go first.
 */
export class ParseCache<T> {
  readonly #entries = new Map<string, { doc: string; value: T }>();

  constructor(
    private readonly parse: (doc: string) => T,
    private readonly max: number,
  ) {}

  get(id: string, doc: string): T {
    const e = this.#entries.get(id);
    if (e && e.doc === doc) {
      this.#entries.delete(id);
      this.#entries.set(id, e);
      return deepCopy(e.value);
    }
    const value = this.parse(doc);
    this.#entries.delete(id);
    this.#entries.set(id, { doc, value });
    if (this.#entries.size > this.max) {
      const oldest = this.#entries.keys().next().value;
      if (oldest !== undefined) this.#entries.delete(oldest);
    }
    return deepCopy(value);
  }

  clear(): void {
    this.#entries.clear();
  }
}

/** A deep copy of plain data as fromJSON makes it: objects, arrays, Dates, byte arrays, primitives. */
export function deepCopy<T>(v: T): T {
  if (v === null || typeof v !== "object") return v;
  if (v instanceof Date) return new Date(v.getTime()) as T;
  if (v instanceof Uint8Array) return v.slice() as T;
  if (Array.isArray(v)) return v.map(deepCopy) as T;
  const o: Record<string, unknown> = {};
  for (const k of Object.keys(v)) o[k] = deepCopy((v as Record<string, unknown>)[k]);
  return o as T;
}
