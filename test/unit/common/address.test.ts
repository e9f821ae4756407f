/**
 * Ceph client addresses as agents report their own and fence others' (src/common/address.ts
 * isClientAddr; the coordinator's Register validation and agents/agent/fencing.ts): one client instance
 * per address, never "IP:0/0" (how Ceph blocklists every client of a host); and the fencing that skips
 * anything else. No Ceph: the cluster's blocklist is a recording fake.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type FencingCluster, fenceEarlierHolders } from "../../../agents/agent/fencing";
import { clientInstances, isClientAddr, sameClientInstance } from "../../../src/common/address";
import type { Logger } from "../../../src/common/log";

describe("Ceph client addresses", () => {
  it("one client instance: legacy, v1/v2, IPv6, a bracketed vector; never a zero nonce or a bare host", () => {
    for (const a of [
      "127.0.0.1:0/2532018983",
      "v2:10.0.0.1:0/123",
      "[v2:10.0.0.1:0/123,v1:10.0.0.1:0/123]",
      "[::1]:0/55",
      "v2:[fe80::1]:0/9",
    ])
      assert.equal(isClientAddr(a), true, a);
    for (const a of [
      "1.2.3.4:0/0",
      "[v2:1.2.3.4:0/0]",
      "[v2:10.0.0.1:0/1,v1:10.0.0.1:0/0]",
      "1.2.3.4",
      "",
      "1.2.3.4:0/x",
      "a".repeat(2000),
    ])
      assert.equal(isClientAddr(a), false, a);
  });

  it("fencing blocklists a dead agent's client, never a whole host nor itself", async () => {
    const added: string[] = [];
    const cluster: FencingCluster = {
      addrs: () => "10.0.0.9:0/999",
      blocklistAdd: async (addr: string) => {
        added.push(addr);
      },
    };
    const warned: string[] = [];
    const log = { info: () => {}, warn: (m: string) => warned.push(m) } as unknown as Logger;
    await fenceEarlierHolders(
      cluster,
      { jobId: "j", fenceClientAddrs: ["1.2.3.4:0/0", "10.0.0.9:0/999", "10.0.0.2:0/222"], fenceSeconds: 60 },
      log,
    );
    assert.deepEqual(added, ["10.0.0.2:0/222"]);
    assert.equal(warned.length, 1, "the whole-host address is named in a warning");
  });

  it("the same client instance: librbd's watcher address against rados_getaddrs' own (v1/v2 list), not another nonce or host", () => {
    const own = "[v2:127.0.0.1:0/3012345678,v1:127.0.0.1:0/3012345678]";
    assert.deepEqual([...clientInstances(own)], ["127.0.0.1/3012345678"]);
    assert.equal(sameClientInstance("127.0.0.1:0/3012345678", own), true);
    assert.equal(sameClientInstance("v1:127.0.0.1:0/3012345678", own), true);
    assert.equal(sameClientInstance("127.0.0.1:0/3012345679", own), false, "another client of the host");
    assert.equal(sameClientInstance("127.0.0.2:0/3012345678", own), false, "another host");
    assert.equal(sameClientInstance("[::1]:0/77", "[v2:[::1]:0/77,v1:[::1]:0/77]"), true);
    assert.equal(sameClientInstance("", own), false);
    assert.equal(sameClientInstance("garbage", "garbage"), false, "unparsable names no instance");
  });
});
