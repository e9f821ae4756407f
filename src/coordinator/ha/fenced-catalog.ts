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

/**
 * `target` with every method call made through `around(call)` (`call` runs the method), and the objects
 * under the `nested` keys wrapped the same way (their own nested: none). A Proxy, so no method is missed.
 */
function wrapped<T extends object>(target: T, around: (call: () => unknown) => unknown, nested: Set<PropertyKey>): T {
  const wrappers = new Map<PropertyKey, unknown>();
  const children = new Map<PropertyKey, unknown>();
  return new Proxy(target, {
    get(t, key) {
      const value = Reflect.get(t, key, t);
      if (nested.has(key) && typeof value === "object" && value !== null) {
        let child = children.get(key);
        if (!child) {
          child = wrapped(value as object, around, new Set());
          children.set(key, child);
        }
        return child;
      }
      if (typeof value !== "function") return value;
      let w = wrappers.get(key);
      if (!w) {
        w = (...args: unknown[]) => around(() => (value as (...a: unknown[]) => unknown).apply(t, args));
        wrappers.set(key, w);
      }
      return w;
    },
  });
}

/** `catalog`, with FencedError reported to `onFenced` before it is thrown on. */
export function fencedCatalog(catalog: Catalog, onFenced: (e: FencedError) => void): Catalog {
  return wrapped(
    catalog,
    (call) => {
      try {
        return call();
      } catch (e) {
        if (e instanceof FencedError) onFenced(e);
        throw e;
      }
    },
    new Set(["policies"]),
  );
}

/**
 * `catalog` for one term: every call (and every call of `catalog.policies`) throws TermEndedError once
 * `live()` is false.
 */
export function termCatalog(catalog: Catalog, live: () => boolean, token: number): Catalog {
  return wrapped(
    catalog,
    (call) => {
      if (!live()) throw new TermEndedError(token);
      return call();
    },
    new Set(["policies"]),
  );
}
