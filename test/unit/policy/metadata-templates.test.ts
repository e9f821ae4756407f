/**
 * A policy's metadata templates (src/coordinator/policy/slots.ts): placeholders filled per volume, and
 * a template refused when written if, filled with the longest names its placeholders stand for, it
 * could outgrow what CreateBackup accepts (4096 characters a value) — the boundary exactly.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { longestExpansion, overlongTemplate, volumeMetadata } from "../../../src/coordinator/policy/slots";
import { Policy } from "../../../src/gen/rbdbackup/v1/policy";

describe("policy metadata templates", () => {
  it("fills every placeholder for the volume backed up", () => {
    const p = Policy.fromPartial({
      name: "gold",
      volumeMetadata: { who: "{cluster}/{pool}/{namespace}/{image} by {policy} {other}" },
    });
    assert.deepEqual(volumeMetadata(p, { cluster: "a", pool: "rbd", namespace: "ns", image: "vm-1" }), {
      who: "a/rbd/ns/vm-1 by gold {other}",
    });
  });

  it("the longest a template can become: each placeholder at its longest name", () => {
    assert.equal(longestExpansion("plain"), 5);
    assert.equal(longestExpansion("{cluster}{pool}{namespace}{image}{policy}"), 64 + 200 + 200 + 200 + 63);
    assert.equal(longestExpansion("{unknown}"), 9);
  });

  it("refused above 4096 characters filled in, accepted at 4096", () => {
    const at = `${"{image}".repeat(20)}${"x".repeat(96)}`; // 20 × 200 + 96
    assert.equal(longestExpansion(at), 4096);
    assert.equal(overlongTemplate({ ok: at }), undefined);
    assert.match(
      overlongTemplate({ ok: at, big: `${at}y` }) ?? "",
      /^volume_metadata\["big"\] can become 4097 characters/,
    );
  });
});
