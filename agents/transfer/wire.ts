/**
 * A faster encoder for the one message that carries bulk data. The generic protobuf writer grows and
 * re-joins buffers for every 1 MiB chunk (copies plus garbage); a DataChunk's wire form is simple, so
 * it is laid out here in one exactly-sized Buffer with a single copy of the data. Every other message
 * goes through the generated encoder. The bytes are the standard encoding (the generated decoder
 * reads them; a unit test checks both agree).
 */
import { TransferMessage, TransferServiceDefinition } from "../../src/gen/rbdbackup/v1/transfer";

function varintSize(v: number): number {
  let n = 1;
  while (v >= 0x80) {
    v = Math.floor(v / 128);
    n++;
  }
  return n;
}

function writeVarint(buf: Buffer, pos: number, v: number): number {
  while (v >= 0x80) {
    buf[pos++] = (v % 128) | 0x80;
    v = Math.floor(v / 128);
  }
  buf[pos++] = v;
  return pos;
}

/** TransferMessage{chunk: DataChunk{offset=1, data=2, crc32=3}} in wire format. */
export function encodeChunkMessage(offset: number, data: Uint8Array, crc32: number): Buffer {
  // DataChunk fields are written only when not default, like the generated encoder.
  const inner =
    (offset !== 0 ? 1 + varintSize(offset) : 0) +
    (data.length !== 0 ? 1 + varintSize(data.length) + data.length : 0) +
    (crc32 !== 0 ? 1 + varintSize(crc32) : 0);
  const buf = Buffer.allocUnsafe(1 + varintSize(inner) + inner);
  let p = 0;
  buf[p++] = 0x12; // TransferMessage.chunk: field 2, length-delimited
  p = writeVarint(buf, p, inner);
  if (offset !== 0) {
    buf[p++] = 0x08; // offset: field 1, varint
    p = writeVarint(buf, p, offset);
  }
  if (data.length !== 0) {
    buf[p++] = 0x12; // data: field 2, length-delimited
    p = writeVarint(buf, p, data.length);
    buf.set(data, p);
    p += data.length;
  }
  if (crc32 !== 0) {
    buf[p++] = 0x18; // crc32: field 3, varint
    p = writeVarint(buf, p, crc32);
  }
  return buf;
}

/** TransferMessage with the fast path for chunks; same decode. */
export const FastTransferMessage: typeof TransferMessage = {
  ...TransferMessage,
  encode(message: TransferMessage, writer?: Parameters<typeof TransferMessage.encode>[1]) {
    if (message.body?.$case === "chunk" && writer === undefined) {
      const c = message.body.value;
      const bytes = encodeChunkMessage(c.offset, c.data, c.crc32);
      return { finish: () => bytes } as unknown as ReturnType<typeof TransferMessage.encode>;
    }
    return TransferMessage.encode(message, writer);
  },
};

/** The TransferService definition with the fast chunk encoder (for the client side). */
export const FastTransferServiceDefinition = {
  ...TransferServiceDefinition,
  methods: {
    ...TransferServiceDefinition.methods,
    transfer: { ...TransferServiceDefinition.methods.transfer, requestType: FastTransferMessage },
  },
} as typeof TransferServiceDefinition;
