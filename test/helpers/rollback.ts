/**
 * A catalog transaction a test rolls back on purpose: `body` runs inside it, then a Rollback is thrown.
 * Only that Rollback counts as the expected throw — an assertion that fails inside (what the transaction
 * sees of its own writes) or any other error fails the test (a bare assert.throws took them as the
 * rollback, so the assertions inside could never fail).
 */
import assert from "node:assert/strict";

export class Rollback extends Error {
  constructor() {
    super("rolled back on purpose by the test");
  }
}

export function rolledBack(c: { transaction<T>(f: () => T): T }, body: () => void): void {
  assert.throws(
    () =>
      c.transaction(() => {
        body();
        throw new Rollback();
      }),
    (e: unknown) => {
      if (e instanceof Rollback) return true;
      throw e;
    },
  );
}
