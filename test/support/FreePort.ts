import * as net from "node:net"

/** A free TCP port on 127.0.0.1 (for servers that take a port rather than pick one). */
export const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const s = net.createServer()
    s.once("error", reject)
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port
      s.close(() => resolve(port))
    })
  })

/**
 * `count` consecutive free ports (default three: vLLM's and one per classifier after it, the smoke profile's two; a
 * fleet of R replicas needs R + 2).
 */
export const freePortRun = async (count = 3): Promise<number> => {
  for (;;) {
    const p = await freePort()
    const ok = await Promise.all(Array.from({ length: count - 1 }, (_, i) => p + 1 + i).map((q) =>
      new Promise<boolean>((resolve) => {
        const s = net.createServer().once("error", () => resolve(false))
        s.listen(q, "127.0.0.1", () => s.close(() => resolve(true)))
      })))
    if (ok.every(Boolean) && p + count - 1 < 65536) return p
  }
}
