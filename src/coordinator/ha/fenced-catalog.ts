/**
 * The catalog as the coordinator's parts see it when leadership is on: the same object, except that a
 * call that throws FencedError (the store refused a write of a deposed leader) tells the leadership
 * loop first — it steps down at once, whoever made the write (scheduler tick, policy runner, API call,
 * agent session) — and then throws on as before. The policy store (`catalog.policies`) is watched the
 * same way. A Proxy, so no method of the Catalog interface can be forgotten.
 *
 * A term's own view (termCatalog): the database fences writes by the token this process holds now, so
 * work a term left running (an agent's answer awaited across a step-down) would commit under the token of
 * a later term of the same process, as if that term had decided it. Each term gets a view that refuses
 * every call once the term has ended (TermEndedError, not a FencedError: the leadership is not told —
 * the current term is not the one at fault — and the ended term's catch sites log it at debug level).
 */
import type { Catalog } from "../catalog/catalog";
import { FencedError, TermEndedError } from "../catalog/leader-lease";

function watched<T extends object>(target: T, onFenced: (e: FencedError) => void, nested: Set<PropertyKey>): T {
  const wrappers = new Map<PropertyKey, unknown>();
  const children = new Map<PropertyKey, unknown>();
  return new Proxy(target, {
    get(t, key) {
      const value = Reflect.get(t, key, t);
      if (nested.has(key) && typeof value === "object" && value !== null) {
        let child = children.get(key);
        if (!child) {
          child = watched(value as object, onFenced, new Set());
          children.set(key, child);
        }
        return child;
      }
      if (typeof value !== "function") return value;
      let w = wrappers.get(key);
      if (!w) {
        w = (...args: unknown[]) => {
          try {
            return (value as (...a: unknown[]) => unknown).apply(t, args);
          } catch (e) {
            if (e instanceof FencedError) onFenced(e);
            throw e;
          }
        };
        wrappers.set(key, w);
      }
      return w;
    },
  });
}

/** `catalog`, with FencedError reported to `onFenced` before it is thrown on. */
export function fencedCatalog(catalog: Catalog, onFenced: (e: FencedError) => void): Catalog {
  return watched(catalog, onFenced, new Set(["policies"]));
}

/**
 * `catalog` for one term: every call (and every call of `catalog.policies`) throws TermEndedError once
 * `live()` is false.
 */
export function termCatalog(catalog: Catalog, live: () => boolean, token: number): Catalog {
  return ended(catalog, live, token, new Set(["policies"]));
}

function ended<T extends object>(target: T, live: () => boolean, token: number, nested: Set<PropertyKey>): T {
  const wrappers = new Map<PropertyKey, unknown>();
  const children = new Map<PropertyKey, unknown>();
  return new Proxy(target, {
    get(t, key) {
      const value = Reflect.get(t, key, t);
      if (nested.has(key) && typeof value === "object" && value !== null) {
        let child = children.get(key);
        if (!child) {
          child = ended(value as object, live, token, new Set());
          children.set(key, child);
        }
        return child;
      }
      if (typeof value !== "function") return value;
      let w = wrappers.get(key);
      if (!w) {
        w = (...args: unknown[]) => {
          if (!live()) throw new TermEndedError(token);
          return (value as (...a: unknown[]) => unknown).apply(t, args);
        };
        wrappers.set(key, w);
      }
      return w;
    },
  });
}
