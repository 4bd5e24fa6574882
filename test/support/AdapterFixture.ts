import { spawn } from "node:child_process"
import { mkdirSync, writeFileSync } from "node:fs"
import * as path from "node:path"

/**
 * A LoRA adapter folder in PEFT's layout (adapter_config.json + adapter_model.safetensors with
 * one lora_A/lora_B pair); `zero` writes all-zero weights: an adapter that changes nothing.
 */
export const writeAdapter = (dir: string, options: { readonly seed?: number; readonly zero?: boolean } = {}) => {
  mkdirSync(dir, { recursive: true })
  writeFileSync(path.join(dir, "adapter_config.json"), JSON.stringify({
    peft_type: "LORA", task_type: "CAUSAL_LM", r: 8, lora_alpha: 16, lora_dropout: 0, bias: "none",
    target_modules: ["q_proj", "v_proj"], modules_to_save: null, use_dora: false
  }))
  const n = 8 * 64
  const a = new Float32Array(n)
  const b = new Float32Array(n)
  if (!options.zero) for (let i = 0; i < n; i++) (a[i] = Math.sin(i + (options.seed ?? 1))), (b[i] = Math.cos(i * (options.seed ?? 1)))
  const header = JSON.stringify({
    "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": { dtype: "F32", shape: [8, 64], data_offsets: [0, n * 4] },
    "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": { dtype: "F32", shape: [64, 8], data_offsets: [n * 4, n * 8] }
  })
  const padded = header + " ".repeat((8 - (header.length % 8)) % 8)
  const len = Buffer.alloc(8)
  len.writeBigUInt64LE(BigInt(padded.length))
  writeFileSync(path.join(dir, "adapter_model.safetensors"), Buffer.concat([len, Buffer.from(padded), Buffer.from(a.buffer), Buffer.from(b.buffer)]))
  return dir
}

/** Runs `dart` in its own process without blocking this one (test servers live in this process). */
export const dartAsync = (args: ReadonlyArray<string>, env: Record<string, string> = {}) => {
  const child = spawn(process.execPath, [path.resolve("bin/dart.js"), ...args], {
    env: { ...process.env, EXP_ID: "", ...env },
    stdio: ["ignore", "pipe", "pipe"]
  })
  let stdout = ""
  let stderr = ""
  child.stdout.on("data", (c: Buffer) => (stdout += c.toString()))
  child.stderr.on("data", (c: Buffer) => (stderr += c.toString()))
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((resolve) =>
    child.on("exit", (code, signal) => resolve({ code, signal, stdout, stderr })))
  return { child, done }
}
