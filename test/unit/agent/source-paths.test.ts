/**
 * Path sources only under `sourcePaths` (agents/engine/source-paths.ts), on a temp directory: refused
 * by default, outside the list, via ".." and via a symlink pointing out; allowed inside (the real path).
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { Status } from "nice-grpc";
import { notCoordinator } from "../../../agents/agent/coordinator-link";
import { allowedSourcePath } from "../../../agents/engine/source-paths";

describe("source paths", () => {
  const root = mkdtempSync(path.join(tmpdir(), "rbdbackup-srcpaths-"));
  const inside = path.join(root, "allowed");
  const outside = path.join(root, "secret");
  mkdirSync(inside);
  writeFileSync(path.join(inside, "disk.img"), "x");
  writeFileSync(outside, "keyring");
  symlinkSync(outside, path.join(inside, "link"));
  after(() => rmSync(root, { recursive: true, force: true }));
  const denied = (re: RegExp) => ({ status: Status.PERMISSION_DENIED, message: re });

  it("refused: by default, outside the list, via .., via a symlink out", async () => {
    await assert.rejects(allowedSourcePath(outside, []), denied(/sourcePaths is empty/));
    await assert.rejects(allowedSourcePath(outside, [inside]), denied(/outside this agent's sourcePaths/));
    await assert.rejects(allowedSourcePath(path.join(inside, "..", "secret"), [inside]), denied(/sourcePaths/));
    await assert.rejects(allowedSourcePath(path.join(inside, "link"), [inside]), denied(/sourcePaths/));
    await assert.rejects(allowedSourcePath(`${inside}-x/disk.img`, [inside]), denied(/sourcePaths/));
  });

  it("allowed inside (its real path); missing inside → NOT_FOUND", async () => {
    assert.equal(await allowedSourcePath(path.join(inside, "disk.img"), [inside]), path.join(inside, "disk.img"));
    await assert.rejects(allowedSourcePath(path.join(inside, "nope"), [inside]), { status: Status.NOT_FOUND });
  });

  it("the coordinator session's far end must name a coordinator", async () => {
    const { labTls } = await import("../../../src/lab/agent-process");
    const { readFileSync } = await import("node:fs");
    const { X509Certificate } = await import("node:crypto");
    const raw = (name: string) => new X509Certificate(readFileSync(labTls(name).cert as string)).raw;
    assert.equal(notCoordinator({ raw: raw("coordinator") }), null);
    assert.match(notCoordinator({ raw: raw("agent-site-a") }) ?? "", /agent site-a\/agent-site-a, not a coordinator/);
    assert.match(notCoordinator(undefined) ?? "", /identity-less/);
  });
});
