#!/usr/bin/env node
// Entry for `npx dart` / the installed `dart` command: Node 24 runs the TypeScript sources directly.
import { enableCompileCache } from "node:module"

// Reuse compiled code across invocations: most of a short command's start-up is module compilation.
enableCompileCache?.()
await import("../src/bin.ts")
