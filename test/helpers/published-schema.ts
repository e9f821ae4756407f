/**
 * The checks every daemon's published JSON Schema gets (deploy/schema/<daemon>.schema.json): it is
 * what the code's schema generates now, the example config validates against it, and each bad case is
 * refused at exactly its path with exactly its keyword.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, it } from "node:test";
import type { TSchema } from "@sinclair/typebox";
import Ajv from "ajv";
import { schemaFile } from "../../src/common/config/fields";

/** The example config as parsed JSON. */
// biome-ignore lint/suspicious/noExplicitAny: parsed JSON, shaped by each case
export type Example = Record<string, any>;

/** A bad document (built from the example), the path it must be refused at, and the failing keyword. */
export type BadCase = [doc: (example: Example) => unknown, at: string, keyword: string];

export function describePublishedSchema(daemon: string, schema: TSchema, badCases: BadCase[]): void {
  const root = path.resolve(__dirname, "../../..");
  const example = path.join(root, `deploy/examples/${daemon}.json`);
  const published = path.join(root, `deploy/schema/${daemon}.schema.json`);
  describe(`deploy/schema/${daemon}.schema.json`, () => {
    const file = JSON.parse(readFileSync(published, "utf8"));
    const validate = new Ajv({ allErrors: true }).compile(file);
    const ex = () => JSON.parse(readFileSync(example, "utf8")) as Example;

    it(`is what the ${daemon}'s schema generates now (regenerate: see its config-schema.ts)`, () => {
      assert.deepEqual(file, JSON.parse(schemaFile(schema)));
    });

    it(`accepts deploy/examples/${daemon}.json, whose $schema points at it`, () => {
      const doc = ex();
      assert.equal(validate(doc), true, JSON.stringify(validate.errors));
      assert.equal(path.resolve(path.dirname(example), doc.$schema as string), published);
    });

    it("refuses an unknown key, a wrong type and an out-of-range value, each at its path", () => {
      for (const [doc, at, keyword] of badCases) {
        assert.equal(validate(doc(ex())), false);
        assert.deepEqual(
          validate.errors?.map((e) => [e.instancePath, e.keyword]),
          [[at, keyword]],
        );
      }
    });
  });
}
