/**
 * A restricted Python unpickler for the upstream benchmark files: plain containers,
 * strings, numbers, and numpy integer/float scalars (the upstream mixes them into
 * scenario ids). Any other global is refused, so nothing in a pickle can run or build
 * objects we do not expect. Protocols 0–5.
 */
export class PickleError extends Error {}

/** A numpy scalar decoded to its value. */
export interface NumpyDtype {
  readonly kind: "numpy.dtype"
  code: string
  byteorder: string
}

type Value = unknown
const MARK = Symbol("mark")

const ALLOWED_GLOBALS = new Set([
  "numpy.core.multiarray scalar",
  "numpy._core.multiarray scalar",
  "numpy dtype",
  "_codecs encode",
  "__builtin__ set",
  "builtins set",
  "__builtin__ frozenset",
  "builtins frozenset"
])

class Global {
  readonly name: string
  constructor(name: string) {
    this.name = name
  }
}

/** Opcodes a protocol 0/1 pickle can start with. */
const firstOpcodes = new Set(Array.from("(]})cILFSVNKJMXUTBqpgGhj", (c) => c.charCodeAt(0)))

export const readPickle = (data: Uint8Array): unknown => {
  // Every pickle ends with STOP ('.') and opens with PROTO (0x80) or a protocol 0/1 opcode; anything
  // else is some other file, better named as such than as a puzzling opcode error deep inside.
  if (data.length < 2 || data[data.length - 1] !== 0x2e || !(data[0] === 0x80 || firstOpcodes.has(data[0]!))) {
    const head = Array.from(data.subarray(0, 8), (b) => b.toString(16).padStart(2, "0")).join(" ")
    throw new PickleError(`not a Python pickle (it does not start with a pickle opcode and end with STOP; first bytes: ${head || "none"})`)
  }
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength)
  const decoder = new TextDecoder("utf-8", { fatal: true })
  const latin1 = new TextDecoder("latin1")
  let pos = 0
  const stack: Array<Value | typeof MARK> = []
  const memo = new Map<number, Value>()

  const need = (n: number) => {
    if (pos + n > data.length) throw new PickleError(`truncated pickle at byte ${pos}`)
  }
  const u8 = () => (need(1), data[pos++]!)
  const u16 = () => (need(2), pos += 2, view.getUint16(pos - 2, true))
  const u32 = () => (need(4), pos += 4, view.getUint32(pos - 4, true))
  const i32 = () => (need(4), pos += 4, view.getInt32(pos - 4, true))
  const u64 = () => {
    need(8)
    const v = view.getBigUint64(pos, true)
    pos += 8
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new PickleError("object too large")
    return Number(v)
  }
  const bytes = (n: number) => (need(n), pos += n, data.subarray(pos - n, pos))
  const line = () => {
    const end = data.indexOf(0x0a, pos)
    if (end < 0) throw new PickleError(`unterminated line at byte ${pos}`)
    const s = latin1.decode(data.subarray(pos, end))
    pos = end + 1
    return s
  }
  const pop = (): Value => {
    if (stack.length === 0) throw new PickleError(`stack underflow at byte ${pos}`)
    const v = stack.pop()
    if (v === MARK) throw new PickleError("unexpected mark")
    return v
  }
  const popMark = (): Array<Value> => {
    const i = stack.lastIndexOf(MARK)
    if (i < 0) throw new PickleError("mark not found")
    const items = stack.splice(i + 1) as Array<Value>
    stack.pop()
    return items
  }
  const top = (): Value => {
    if (stack.length === 0) throw new PickleError("empty stack")
    return stack[stack.length - 1]
  }
  const longFromBytes = (b: Uint8Array): number | bigint => {
    if (b.length === 0) return 0
    let n = 0n
    for (let i = b.length - 1; i >= 0; i--) n = (n << 8n) | BigInt(b[i]!)
    if (b[b.length - 1]! & 0x80) n -= 1n << BigInt(8 * b.length)
    return n >= BigInt(Number.MIN_SAFE_INTEGER) && n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n
  }
  const str = (b: Uint8Array) => {
    try {
      return decoder.decode(b)
    } catch (cause) {
      throw new PickleError(`invalid UTF-8 string at byte ${pos}`, { cause })
    }
  }
  const call = (fn: Value, args: Value): Value => {
    if (!(fn instanceof Global) || !Array.isArray(args)) throw new PickleError("unsupported REDUCE")
    switch (fn.name) {
      case "numpy dtype":
        return { kind: "numpy.dtype", code: String(args[0]), byteorder: "=" } satisfies NumpyDtype
      case "numpy.core.multiarray scalar":
      case "numpy._core.multiarray scalar":
        return numpyScalar(args[0] as NumpyDtype, args[1])
      case "_codecs encode":
        return Uint8Array.from(String(args[0]), (c) => c.charCodeAt(0) & 0xff)
      default:
        return Array.isArray(args[0]) ? [...(args[0] as Array<Value>)] : []
    }
  }

  for (;;) {
    const op = u8()
    switch (op) {
      case 0x80: // PROTO
        u8()
        break
      case 0x95: // FRAME
        u64()
        break
      case 0x2e: { // STOP
        const result = pop()
        return result
      }
      case 0x28: // MARK
        stack.push(MARK)
        break
      case 0x5d: // EMPTY_LIST
        stack.push([])
        break
      case 0x29: // EMPTY_TUPLE
        stack.push([])
        break
      case 0x7d: // EMPTY_DICT
        stack.push(new Map())
        break
      case 0x8f: // EMPTY_SET
        stack.push([])
        break
      case 0x6c: // LIST
      case 0x74: // TUPLE
        stack.push(popMark())
        break
      case 0x85: // TUPLE1
        stack.push([pop()])
        break
      case 0x86: { // TUPLE2
        const b = pop(), a = pop()
        stack.push([a, b])
        break
      }
      case 0x87: { // TUPLE3
        const c = pop(), b = pop(), a = pop()
        stack.push([a, b, c])
        break
      }
      case 0x61: { // APPEND
        const v = pop()
        asList(top()).push(v)
        break
      }
      case 0x65: // APPENDS
      case 0x90: { // ADDITEMS
        const items = popMark()
        asList(top()).push(...items)
        break
      }
      case 0x73: { // SETITEM
        const v = pop(), k = pop()
        asDict(top()).set(k, v)
        break
      }
      case 0x75: { // SETITEMS
        const items = popMark()
        const d = asDict(top())
        for (let i = 0; i + 1 < items.length; i += 2) d.set(items[i], items[i + 1])
        break
      }
      case 0x64: { // DICT
        const items = popMark()
        const d = new Map<Value, Value>()
        for (let i = 0; i + 1 < items.length; i += 2) d.set(items[i], items[i + 1])
        stack.push(d)
        break
      }
      case 0x4e: // NONE
        stack.push(null)
        break
      case 0x88: // NEWTRUE
        stack.push(true)
        break
      case 0x89: // NEWFALSE
        stack.push(false)
        break
      case 0x4b: // BININT1
        stack.push(u8())
        break
      case 0x4d: // BININT2
        stack.push(u16())
        break
      case 0x4a: // BININT
        stack.push(i32())
        break
      case 0x8a: // LONG1
        stack.push(longFromBytes(bytes(u8())))
        break
      case 0x8b: // LONG4
        stack.push(longFromBytes(bytes(u32())))
        break
      case 0x49: { // INT
        const s = line()
        stack.push(s === "01" ? true : s === "00" ? false : parseIntStrict(s))
        break
      }
      case 0x4c: // LONG
        stack.push(parseIntStrict(line().replace(/L$/, "")))
        break
      case 0x47: // BINFLOAT
        need(8)
        stack.push(view.getFloat64(pos, false))
        pos += 8
        break
      case 0x46: // FLOAT
        stack.push(Number(line()))
        break
      case 0x8c: // SHORT_BINUNICODE
        stack.push(str(bytes(u8())))
        break
      case 0x58: // BINUNICODE
        stack.push(str(bytes(u32())))
        break
      case 0x8d: // BINUNICODE8
        stack.push(str(bytes(u64())))
        break
      case 0x56: // UNICODE (raw-unicode-escape)
        stack.push(line().replace(/\\u([0-9a-fA-F]{4})|\\U([0-9a-fA-F]{8})/g, (_m, a?: string, b?: string) =>
          String.fromCodePoint(parseInt((a ?? b)!, 16))))
        break
      case 0x43: // SHORT_BINBYTES
        stack.push(bytes(u8()).slice())
        break
      case 0x42: // BINBYTES
        stack.push(bytes(u32()).slice())
        break
      case 0x8e: // BINBYTES8
        stack.push(bytes(u64()).slice())
        break
      case 0x55: // SHORT_BINSTRING (py2 str)
        stack.push(latin1.decode(bytes(u8())))
        break
      case 0x54: // BINSTRING
        stack.push(latin1.decode(bytes(u32())))
        break
      case 0x94: // MEMOIZE
        memo.set(memo.size, top())
        break
      case 0x71: // BINPUT
        memo.set(u8(), top())
        break
      case 0x72: // LONG_BINPUT
        memo.set(u32(), top())
        break
      case 0x70: // PUT
        memo.set(parseIntStrict(line()) as number, top())
        break
      case 0x68: // BINGET
        stack.push(memoGet(memo, u8()))
        break
      case 0x6a: // LONG_BINGET
        stack.push(memoGet(memo, u32()))
        break
      case 0x67: // GET
        stack.push(memoGet(memo, parseIntStrict(line()) as number))
        break
      case 0x63: { // GLOBAL
        const module = line()
        const name = line()
        stack.push(global(`${module} ${name}`))
        break
      }
      case 0x93: { // STACK_GLOBAL
        const name = pop(), module = pop()
        stack.push(global(`${String(module)} ${String(name)}`))
        break
      }
      case 0x52: { // REDUCE
        const args = pop(), fn = pop()
        stack.push(call(fn, args))
        break
      }
      case 0x62: { // BUILD
        const state = pop()
        const obj = top()
        if (isDtype(obj) && Array.isArray(state) && typeof state[1] === "string") obj.byteorder = state[1]
        break
      }
      case 0x30: // POP
        pop()
        break
      case 0x31: // POP_MARK
        popMark()
        break
      case 0x32: // DUP
        stack.push(top())
        break
      default:
        throw new PickleError(`unsupported pickle opcode 0x${op.toString(16)} at byte ${pos - 1}`)
    }
  }
}

const global = (name: string) => {
  if (!ALLOWED_GLOBALS.has(name)) throw new PickleError(`refusing pickle global "${name}": only plain data is accepted`)
  return new Global(name)
}

const asList = (v: unknown): Array<unknown> => {
  if (!Array.isArray(v)) throw new PickleError("APPEND target is not a list")
  return v
}
const asDict = (v: unknown): Map<unknown, unknown> => {
  if (!(v instanceof Map)) throw new PickleError("SETITEM target is not a dict")
  return v
}
const memoGet = (memo: Map<number, unknown>, i: number) => {
  if (!memo.has(i)) throw new PickleError(`memo key ${i} missing`)
  return memo.get(i)
}
const parseIntStrict = (s: string): number | bigint => {
  if (!/^[-+]?\d+$/.test(s.trim())) throw new PickleError(`bad integer literal "${s}"`)
  const n = BigInt(s.trim())
  return n >= BigInt(Number.MIN_SAFE_INTEGER) && n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n
}
const isDtype = (u: unknown): u is NumpyDtype =>
  typeof u === "object" && u !== null && (u as { kind?: unknown }).kind === "numpy.dtype"

const numpyScalar = (dtype: NumpyDtype, raw: unknown): number | bigint | boolean => {
  if (!isDtype(dtype) || !(raw instanceof Uint8Array)) throw new PickleError("malformed numpy scalar")
  const m = /^([iufb])(\d)$/.exec(dtype.code)
  if (!m) throw new PickleError(`unsupported numpy dtype "${dtype.code}"`)
  const [, kind, size] = m
  const little = dtype.byteorder !== ">"
  const v = new DataView(raw.buffer, raw.byteOffset, raw.byteLength)
  if (raw.length !== Number(size)) throw new PickleError("numpy scalar has the wrong size")
  switch (`${kind}${size}`) {
    case "b1": return raw[0] !== 0
    case "i1": return v.getInt8(0)
    case "u1": return v.getUint8(0)
    case "i2": return v.getInt16(0, little)
    case "u2": return v.getUint16(0, little)
    case "i4": return v.getInt32(0, little)
    case "u4": return v.getUint32(0, little)
    case "i8": return safe(v.getBigInt64(0, little))
    case "u8": return safe(v.getBigUint64(0, little))
    case "f4": return v.getFloat32(0, little)
    case "f8": return v.getFloat64(0, little)
    default: throw new PickleError(`unsupported numpy dtype "${dtype.code}"`)
  }
}
const safe = (n: bigint) => (n >= BigInt(Number.MIN_SAFE_INTEGER) && n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n)
