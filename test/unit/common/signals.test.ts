/**
 * linkSignals: the joined signal aborts with the first source's reason; once disposed, nothing stays
 * hooked on a long-lived source (what AbortSignal.any leaves behind in Node 20).
 */
import assert from "node:assert/strict";
import { getEventListeners } from "node:events";
import { describe, it } from "node:test";
import { linkSignals } from "../../../src/common/signals";

describe("linkSignals", () => {
  it("aborts with the first source's reason, and unhooks the others", () => {
    const a = new AbortController();
    const b = new AbortController();
    const l = linkSignals(a.signal, b.signal);
    assert.equal(l.signal.aborted, false);
    b.abort(new Error("b went"));
    assert.equal(l.signal.aborted, true);
    assert.match(String(l.signal.reason), /b went/);
    assert.equal(getEventListeners(a.signal, "abort").length, 0, "nothing left on a");
    a.abort(new Error("a later"));
    assert.match(String(l.signal.reason), /b went/, "the first reason stays");
  });

  it("a source already aborted: aborted at once, nothing hooked", () => {
    const live = new AbortController();
    const l = linkSignals(live.signal, AbortSignal.abort("gone"));
    assert.equal(l.signal.reason, "gone");
    assert.equal(getEventListeners(live.signal, "abort").length, 0);
  });

  it("disposed after each of many calls, a long-lived source keeps no listener", () => {
    const term = new AbortController();
    for (let i = 0; i < 1000; i++) {
      const call = new AbortController();
      const l = linkSignals(call.signal, term.signal);
      l.dispose();
      l.dispose();
    }
    assert.equal(getEventListeners(term.signal, "abort").length, 0);
    // Disposed, the joined signal no longer follows the sources.
    const l = linkSignals(term.signal);
    l.dispose();
    term.abort();
    assert.equal(l.signal.aborted, false);
  });
});
