/**
 * An assert.rejects matcher for a gRPC failure: a ClientError of exactly `code` (and, when given, a
 * message matching `pattern`). A message that merely names a status, or any other error, does not pass.
 */
import assert from "node:assert/strict";
import { ClientError, Status } from "nice-grpc-common";

export function grpcStatus(code: Status | Status[], pattern?: RegExp) {
  const codes = Array.isArray(code) ? code : [code];
  return (e: unknown): true => {
    assert.ok(e instanceof ClientError, `expected a gRPC error, got ${String(e)}`);
    assert.ok(
      codes.includes(e.code),
      `expected ${codes.map((c) => Status[c]).join(" or ")}, got ${Status[e.code]}: ${e.details}`,
    );
    if (pattern) assert.match(e.details, pattern);
    return true;
  };
}
