#!/usr/bin/env node
// Entry for `npx dart` / the installed `dart` command: Node 24 runs the TypeScript sources directly.
import "../src/bin.ts"
