// `npm run test:slow`'s vitest part: the slow suite as two vitest runs at once. `slow` (Docker, containers, vLLM on
// CPU, whole runs) runs its files one at a time and prints as it goes; `slow-loopback` (loopback servers, many
// `dart` processes, the Python trainer, the Slurm stand-ins: files that mostly wait) runs beside it and is printed
// when done. On a 2-core machine this takes the loopback files' minutes off the suite's wall time. Exit 1 when either fails.
import { spawn } from "node:child_process"
import * as path from "node:path"

const root = path.resolve(import.meta.dirname, "..")
const vitest = path.join(root, "node_modules", "vitest", "vitest.mjs")
const extra = process.argv.slice(2)

const run = (project: string, capture: boolean) =>
  new Promise<{ code: number; output: string }>((resolve) => {
    const child = spawn(process.execPath, [vitest, "run", "--project", project, ...extra], { cwd: root, stdio: ["ignore", capture ? "pipe" : "inherit", capture ? "pipe" : "inherit"] })
    let output = ""
    child.stdout?.on("data", (c: Buffer) => (output += c.toString()))
    child.stderr?.on("data", (c: Buffer) => (output += c.toString()))
    child.on("exit", (code, signal) => resolve({ code: code ?? (signal === null ? 1 : 128), output }))
  })

const [heavy, loopback] = await Promise.all([run("slow", false), run("slow-loopback", true)])
process.stdout.write(`\n[test:slow] the slow-loopback project (ran beside the slow one):\n${loopback.output}`)
const failed = [heavy.code === 0 ? [] : ["slow"], loopback.code === 0 ? [] : ["slow-loopback"]].flat()
process.stdout.write(`\n[test:slow] ${failed.length === 0 ? "both projects passed" : `failed: ${failed.join(", ")}`}\n`)
process.exit(failed.length === 0 ? 0 : 1)
