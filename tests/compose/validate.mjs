// validate.mjs - check docker/docker-compose.yml against the Compose
// Specification's JSON schema, the one Compose v2 validates every file with
// (compose-spec.json beside this file: schema/compose-spec.json of
// compose-spec/compose-go, Apache-2.0).  Compose v2 need not be installed.
//   node tests/compose/validate.mjs [compose-file]
// Uses the ajv and yaml packages of tests/contract (npm ci there first).
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(here, "..", "contract", "package.json"));
const Ajv2020 = require("ajv/dist/2020").default;
const YAML = require("yaml");

const file = process.argv[2] ?? join(here, "..", "..", "docker", "docker-compose.yml");
// Compose resolves YAML merge keys (<<: *anchor) before it validates.
const doc = YAML.parse(readFileSync(file, "utf8"), { merge: true });
const schema = JSON.parse(readFileSync(join(here, "compose-spec.json"), "utf8"));
const ajv = new Ajv2020({ allErrors: true, strict: false });
const validate = ajv.compile(schema);
if (!validate(doc)) {
	for (const e of validate.errors) console.error(`compose: ${file}${e.instancePath || "/"}: ${e.message} ${JSON.stringify(e.params)}`);
	process.exit(1);
}
console.error(`compose: ${file} is valid against the Compose Specification schema (Compose v2)`);
