/**
 * Request messages that cannot be decoded, answered INVALID_ARGUMENT by errorStatus instead of grpc-js's
 * INTERNAL "Error deserializing request". The usual cause is a client's mistake the proto describes as
 * INVALID_ARGUMENT: a 64-bit number above 2^53 − 1 (the generated code reads uint64 and int64 fields as
 * JS numbers and refuses larger ones while decoding, before any handler sees the request — no field of
 * this API takes a value that large). grpc-js gives a failed decode no status of its own, so the
 * service's decoder returns a marked stand-in instead of throwing, and errorStatus refuses it (or, in a
 * client stream, the first such message) before anything else reads it.
 */
import { Status } from "nice-grpc-common";
import { AppError } from "../../common/errors";

const UNDECODABLE = Symbol("rbdbackup.undecodable");

type Decoder = { decode(input: Uint8Array, length?: number): unknown };
type TsProtoService = { methods: Record<string, { requestType: Decoder }> };

/** A copy of a ts-proto service definition whose request decoder marks a failure instead of throwing. */
export function withDecodeFailures<D extends TsProtoService>(def: D): D {
  const methods: Record<string, unknown> = {};
  for (const [key, m] of Object.entries(def.methods)) {
    const decode = (input: Uint8Array, length?: number): unknown => {
      try {
        return m.requestType.decode(input, length);
      } catch (e) {
        return { [UNDECODABLE]: e instanceof Error ? e.message : String(e) };
      }
    };
    methods[key] = { ...m, requestType: { ...m.requestType, decode } };
  }
  return { ...def, methods } as D;
}

/** The refusal of a marked request; undefined for a decoded one. */
export function undecodable(request: unknown): AppError | undefined {
  if (typeof request !== "object" || request === null || !(UNDECODABLE in request)) return undefined;
  const why = String((request as Record<symbol, unknown>)[UNDECODABLE]);
  const big = /MAX_SAFE_INTEGER/.test(why)
    ? ": a 64-bit number field holds more than 2^53 − 1 (9007199254740991), larger than any field of this API takes"
    : "";
  return new AppError(Status.INVALID_ARGUMENT, `the request message could not be decoded (${why})${big}`);
}

/** A client stream that fails at its first marked message. */
export async function* refusingUndecodable<T>(stream: AsyncIterable<T>): AsyncGenerator<T, void, undefined> {
  for await (const m of stream) {
    const refused = undecodable(m);
    if (refused) throw refused;
    yield m;
  }
}
