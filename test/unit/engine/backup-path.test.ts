/** A block device's number, decoded as Linux encodes it (the source's size is read from /sys/dev/block/<major>:<minor>). */
import assert from "node:assert/strict";
import { statSync } from "node:fs";
import { describe, it } from "node:test";
import { deviceNumbers } from "../../../agents/engine/backup-path";

/** glibc's makedev. */
const makedev = (major: bigint, minor: bigint): bigint =>
  ((major & 0xfffn) << 8n) | ((major & 0xfffff000n) << 32n) | (minor & 0xffn) | ((minor & 0xffffff00n) << 12n);

describe("backup of a block device: its device number", () => {
  it("minors past 255 and majors past 4095 decode as Linux encodes them (/dev/rbd16 is 252:256)", () => {
    for (const [major, minor] of [
      [252n, 0n],
      [252n, 256n],
      [259n, 1048575n],
      [4096n, 3n],
      [8n, 16n],
    ] as const) {
      assert.deepEqual(deviceNumbers(makedev(major, minor)), { major, minor }, `${major}:${minor}`);
    }
  });

  it("a real device: /dev/null is 1:3", () => {
    assert.deepEqual(deviceNumbers(statSync("/dev/null", { bigint: true }).rdev), { major: 1n, minor: 3n });
  });
});
