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

/** Three consecutive free ports: vLLM's and one per classifier after it (the smoke profile's two). */
export const freePortRun = async (): Promise<number> => {
  for (;;) {
    const p = await freePort()
    const ok = await Promise.all([p + 1, p + 2].map((q) =>
      new Promise<boolean>((resolve) => {
        const s = net.createServer().once("error", () => resolve(false))
        s.listen(q, "127.0.0.1", () => s.close(() => resolve(true)))
      })))
    if (ok.every(Boolean) && p + 2 < 65536) return p
  }
}
