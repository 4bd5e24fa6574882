import { describe, expect, it } from "@effect/vitest"
import { driverProblem, MIN_NVIDIA_DRIVER, parseNvidiaSmi } from "../../src/compute/DockerBackend.ts"

// The output of `nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader,nounits`
// as NVIDIA documents it (one line per device; names may hold commas only in odd OEM strings).
describe("GPU probe output", () => {
  it("reads every device, its driver and memory", () => {
    const devices = parseNvidiaSmi("0, NVIDIA H100 80GB HBM3, 580.65.06, 81559\n1, NVIDIA H100 80GB HBM3, 580.65.06, 81559\n")
    expect(devices).toEqual([
      { index: 0, name: "NVIDIA H100 80GB HBM3", driver: "580.65.06", memoryMiB: 81559 },
      { index: 1, name: "NVIDIA H100 80GB HBM3", driver: "580.65.06", memoryMiB: 81559 }
    ])
    expect(driverProblem(devices as never)).toBeUndefined()
  })

  it("refuses a driver older than the images need, naming both versions", () => {
    const devices = parseNvidiaSmi("0, Tesla V100-SXM2-16GB, 535.183.01, 16384")
    expect(typeof devices).not.toBe("string")
    expect(driverProblem(devices as never)).toContain(`535.183.01 is older than ${MIN_NVIDIA_DRIVER}`)
  })

  it("says what was wrong with output it cannot read", () => {
    expect(parseNvidiaSmi("")).toBe("nvidia-smi listed no GPU")
    expect(parseNvidiaSmi("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.")).toMatch(/^unexpected nvidia-smi output/)
    expect(parseNvidiaSmi("0, GPU, [N/A], 100")).toMatch(/^unexpected nvidia-smi output/)
  })

  it("takes memory nvidia-smi cannot tell ([N/A]: unified memory, some vGPUs) as unknown", () => {
    expect(parseNvidiaSmi("0, NVIDIA GB10, 580.95.05, [N/A]")).toEqual([{ index: 0, name: "NVIDIA GB10", driver: "580.95.05", memoryMiB: null }])
  })
})
