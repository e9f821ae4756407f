/** Paged list calls: one page, or all of them following next_page_token. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { fetchPages } from "../../../src/cli/paging";

const pages: Record<string, { items: number[]; next: string }> = {
  "": { items: [1, 2], next: "t2" },
  t2: { items: [3], next: "t3" },
  t3: { items: [4], next: "" },
};

function page(token: string) {
  const p = pages[token];
  assert.ok(p, `unexpected page token "${token}"`);
  return p;
}

describe("paging", () => {
  it("one page keeps the next token", async () => {
    assert.deepEqual(await fetchPages(async (t) => page(t), "", false), { items: [1, 2], next: "t2" });
  });

  it("--all follows the tokens to the end", async () => {
    const asked: string[] = [];
    const r = await fetchPages(
      async (t) => {
        asked.push(t);
        return page(t);
      },
      "",
      true,
    );
    assert.deepEqual(r, { items: [1, 2, 3, 4], next: "" });
    assert.deepEqual(asked, ["", "t2", "t3"]);
  });

  it("starts from a given token", async () => {
    assert.deepEqual(await fetchPages(async (t) => page(t), "t2", true), { items: [3, 4], next: "" });
  });

  it("a token that comes back is an error, not a loop", async () => {
    await assert.rejects(
      fetchPages(async () => ({ items: [1], next: "same" }), "", true),
      /twice/,
    );
  });
});
