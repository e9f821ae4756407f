/**
 * What a build says of itself (src/common/version.ts, deploy/build-info.sh): "<package version>+<commit
 * date>.<commit>" from dist/build-info.json, "+unknown" without it (or with anything else in it); the
 * package version is package.json's; the script writes the format the reader takes; GetCoordinatorStatus
 * reports it.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { buildVersion, PACKAGE_VERSION, VERSION } from "../../../src/common/version";
import { serveHarness } from "../coordinator/api-server";
import { Harness } from "../coordinator/harness";

const root = path.resolve(__dirname, "../../../..");

describe("build version", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "rbdbackup-version-"));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const file = (name: string, body: string) => {
    const f = path.join(dir, name);
    writeFileSync(f, body);
    return f;
  };

  it("the package's version, then the commit's date and the commit", () => {
    assert.equal(PACKAGE_VERSION, JSON.parse(readFileSync(path.join(root, "package.json"), "utf8")).version);
    const f = file("ok.json", JSON.stringify({ commit: "8c4c8a0f2cf4-dirty", date: "2026-12-07" }));
    assert.equal(buildVersion(f), `${PACKAGE_VERSION}+2026-12-07.8c4c8a0f2cf4-dirty`);
  });

  it("no record, a torn one, or one with other things in it: unknown", () => {
    assert.equal(buildVersion(path.join(dir, "missing.json")), `${PACKAGE_VERSION}+unknown`);
    assert.equal(buildVersion(file("torn.json", '{"commit":')), `${PACKAGE_VERSION}+unknown`);
    assert.equal(
      buildVersion(file("odd.json", JSON.stringify({ commit: "a b\n", date: "2026-12-07" }))),
      `${PACKAGE_VERSION}+unknown`,
    );
  });

  it("deploy/build-info.sh writes what the reader takes", () => {
    const out = path.join(dir, "built.json");
    execFileSync("bash", [path.join(root, "deploy/build-info.sh"), out]);
    const b = JSON.parse(readFileSync(out, "utf8"));
    assert.match(b.date, /^\d{4}-\d{2}-\d{2}$/);
    assert.match(b.commit, /^([0-9a-f]{12}(-dirty)?|unknown)$/);
    assert.match(buildVersion(out), new RegExp(`^${PACKAGE_VERSION.replace(/\./g, "\\.")}\\+\\d{4}-\\d{2}-\\d{2}\\.`));
  });

  it("GetCoordinatorStatus reports it", async () => {
    const h = new Harness();
    const served = await serveHarness(h);
    try {
      assert.equal((await served.api.getCoordinatorStatus({})).version, VERSION);
    } finally {
      await served.close();
      h.close();
    }
  });
});
