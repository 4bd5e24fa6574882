// `npm run test:slow`'s vitest part: the slow suite as two vitest runs at once. `slow` (Docker, containers, vLLM on
// CPU, whole runs) runs its files one at a time and prints as it goes; `slow-loopback` (loopback servers, many
// `dart` processes, the Python trainer, the Slurm stand-ins: files that mostly wait) runs beside it and is printed
// when done, and the trainer's slow pytest (cancel and resume) after it, still beside the heavy project. On a 2-core
// machine this takes the loopback files' and the trainer's minutes off the suite's wall time. With `--with-trainer`
// (`npm run test:all`) the trainer's quick pytest (`test:trainer`) runs there too, before the slow one. Exit 1 when any fails.
import { spawn } from "node:child_process"
import { readFileSync } from "node:fs"
import * as path from "node:path"

const root = path.resolve(import.meta.dirname, "..")
const vitest = path.join(root, "node_modules", "vitest", "vitest.mjs")
const withTrainer = process.argv.includes("--with-trainer")
const extra = process.argv.slice(2).filter((a) => a !== "--with-trainer")

// `echo`: print as it goes as well as keep it (the heavy project's failures are printed again at the very end, where a
// CI log's tail shows them).
const run = (project: string, echo: boolean) =>
  new Promise<{ code: number; output: string }>((resolve) => {
    const child = spawn(process.execPath, [vitest, "run", "--project", project, ...extra], { cwd: root, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, FORCE_COLOR: process.env.FORCE_COLOR ?? (process.stdout.isTTY ? "1" : "0") } })
    let output = ""
    const take = (to: NodeJS.WriteStream) => (c: Buffer) => {
      output += c.toString()
      if (echo) to.write(c)
    }
    child.stdout.on("data", take(process.stdout))
    child.stderr.on("data", take(process.stderr))
    child.on("exit", (code, signal) => resolve({ code: code ?? (signal === null ? 1 : 128), output }))
  })

/** A package.json script (the trainer's pytest), through the shell as npm would run it; output kept for the end. */
const npmScript = (name: "test:trainer" | "test:trainer:slow") =>
  new Promise<{ code: number; output: string }>((resolve) => {
    const script = (JSON.parse(readFileSync(path.join(root, "package.json"), "utf8")) as { scripts: Record<string, string> }).scripts[name]!
    const child = spawn("sh", ["-c", script], { cwd: root, stdio: ["ignore", "pipe", "pipe"] })
    let output = ""
    child.stdout.on("data", (c: Buffer) => (output += c.toString()))
    child.stderr.on("data", (c: Buffer) => (output += c.toString()))
    child.on("error", (e) => resolve({ code: 1, output: `${output}\n${e.message}` }))
    child.on("exit", (code, signal) => resolve({ code: code ?? (signal === null ? 1 : 128), output }))
  })

const [heavy, [loopback, trainer]] = await Promise.all([
  run("slow", true),
  run("slow-loopback", false).then(async (l) => {
    const quick = withTrainer ? await npmScript("test:trainer") : { code: 0, output: "" }
    const slow = await npmScript("test:trainer:slow")
    return [l, { code: quick.code === 0 ? slow.code : quick.code, output: `${quick.output}${slow.output}` }] as const
  })
])
process.stdout.write(`\n[test:slow] the slow-loopback project (ran beside the slow one):\n${loopback.output}`)
process.stdout.write(`\n[test:slow] the trainer's tests (${withTrainer ? "test:trainer, then " : ""}test:trainer:slow, ran beside the slow one):\n${trainer.output}`)
// vitest's own "Failed Tests" section (errors with their stacks) and the failing lines of the tree.
const failures = (output: string): string => {
  const plain = output.replace(/\u001b\[[0-9;]*m/g, "")
  const section = plain.indexOf("Failed Tests")
  const lines = plain.split("\n").filter((l) => /^\s*(×|FAIL\b)/.test(l))
  return [...lines, section === -1 ? "" : plain.slice(Math.max(0, plain.lastIndexOf("\n", section)), section + 8000)].join("\n")
}
if (heavy.code !== 0) process.stdout.write(`\n[test:slow] the slow project failed:\n${failures(heavy.output)}\n`)
const failed = [heavy.code === 0 ? [] : ["slow"], loopback.code === 0 ? [] : ["slow-loopback"], trainer.code === 0 ? [] : [withTrainer ? "test:trainer or test:trainer:slow" : "test:trainer:slow"]].flat()
process.stdout.write(`\n[test:slow] ${failed.length === 0 ? "all passed: slow, slow-loopback, the trainer's tests" : `failed: ${failed.join(", ")}`}\n`)
process.exit(failed.length === 0 ? 0 : 1)
