#!/usr/bin/env node
// Entry for `npx dart` / the installed `dart` command: Node 24 runs the TypeScript sources directly.
import * as nodeModule from "node:module"
import { setFlagsFromString } from "node:v8"

// `npm ci` installs Node 24 as the `node` devDependency and `npx dart` / `npm run dart` put it first on PATH,
// whatever Node the machine has. Run by an older Node (`node bin/dart.js` with the system's), say so here rather
// than fail on the first `.ts` import. (package.json has no `engines` field: npm runs on the machine's Node and
// would warn EBADENGINE about dart on every first `npx dart`, although dart itself never runs there.)
const major = Number(process.versions.node.split(".")[0])
if (major < 24) {
  process.stderr.write(`dart needs Node 24; this is Node ${process.versions.node}. Run it as \`npx dart …\` (or \`npm run dart -- …\`) in the repository after \`npm ci\` (./scripts/setup.sh runs it): both use the Node 24 that npm installs in node_modules.\n`)
  process.exit(1)
}
const { userGaveFlag } = await import("../src/common/NodeFlags.ts")

// Garbage-collector tuning, set before any module loads. DART's live heap is small and flat (about
// 40-55 MB during a 200,000-request `dart infer`: loaded code, in-flight requests, offsets per request),
// but on a machine with much memory V8's defaults grow the young generation to two 64 MB semispaces
// and let the old generation reach about 4x its live size before a full collection, so a long request
// loop sat at 450-550 MB RSS that was mostly garbage. Two changes, neither of them a limit:
// - the young generation keeps V8's initial 1 MB semispace (growth factor 1) instead of growing;
// - a full collection runs once the old generation has grown by half since the last one (factor 1.5,
//   not up to 4), which keeps the peaks between collections small.
// The heap's maximum stays V8's default, so a run that really holds more (a million-row evaluate:
// read time unchanged) still gets it. The price is more frequent collections: about 10% more CPU per
// infer request with the platform fetch, within noise with the client's httpFetch. `npm run bench`
// shows the whole-run RSS this buys (under 200 MB, flat in the run's length).
// A flag given on the command line (or NODE_OPTIONS) wins over these.
if (!userGaveFlag("--semi-space-growth-factor", "--max-semi-space-size", "--min-semi-space-size")) setFlagsFromString("--semi-space-growth-factor=1")
if (!userGaveFlag("--heap-growing-percent")) setFlagsFromString("--heap-growing-percent=50")

// Reuse compiled code across invocations: most of a short command's start-up is module compilation.
nodeModule.enableCompileCache?.()
await import("../src/bin.ts")
