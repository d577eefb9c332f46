// Native addon: build, ISA detection and forcing, threads, mmapFile, argument errors, every ISA path vs plain TS.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';

import { WEIGHT_DTYPES, type Backend } from '../../src/backend/backend.js';
import { loadAddon, type NativeAddon, type NativeIsa } from '../../src/backend/native-addon.js';
import { loadNativeBackend, nativeCounters } from '../../src/backend/native.js';
import { bf16ToF32, dequantizeRow, f32ToBf16 } from '../../src/tensor/codecs.js';
import { quantizeTensor } from '../../src/tensor/quantize.js';
import { Tensor } from '../../src/tensor/tensor.js';
import { assertClose, avx512MatmulPath, f64Matmul, Rng, withSeed } from './helpers.js';
import { repoUrl } from '../repo.js';

const ORDER: NativeIsa[] = ['scalar', 'avx2', 'avx512'];

function addon(): NativeAddon {
  const a = loadAddon();
  assert.ok(a, 'build/Release/floe.node is missing: run `npx node-gyp rebuild`');
  return a;
}

function backend(): Backend {
  const be = loadNativeBackend();
  assert.ok(be);
  return be;
}

/** The ISAs this CPU can run, lowest first. */
function isasHere(): NativeIsa[] {
  return ORDER.slice(0, ORDER.indexOf(addon().supportedIsa()) + 1);
}

const RTOL = { f32: 1e-5, f16: 1e-5, bf16: 1e-2, fp8_e4m3: 1e-2, q8_0: 1e-2 } as const;

describe('native addon', () => {
  const initialIsa = loadAddon()?.isa();
  const initialThreads = loadAddon()?.getThreads();
  after(() => {
    if (initialIsa) addon().setIsa(initialIsa);
    if (initialThreads) addon().setThreads(initialThreads);
  });

  it('is built and exposes a native Backend', () => {
    const be = backend();
    assert.equal(be.name, 'native');
    for (const k of ['matmul', 'rmsnorm', 'rope', 'swiglu', 'embedding', 'add', 'kvWrite', 'attention', 'logSoftmax', 'topk'] as const) {
      assert.equal(typeof be[k], 'function', k);
    }
  });

  it('detects the ISA from the CPU flags', () => {
    const a = addon();
    const cpuinfo = (() => { try { return readFileSync('/proc/cpuinfo', 'utf8'); } catch { return null; } })();
    if (cpuinfo && process.arch === 'x64') {
      const flags = new Set((/^flags\s*:(.*)$/m.exec(cpuinfo)?.[1] ?? '').trim().split(/\s+/));
      const avx2 = flags.has('avx2') && flags.has('fma');
      const avx512 = avx2 && ['avx512f', 'avx512bw', 'avx512vl', 'avx512dq', 'avx512_bf16', 'avx512_vnni', 'avx512vbmi'].every((f) => flags.has(f));
      assert.equal(a.supportedIsa(), avx512 ? 'avx512' : avx2 ? 'avx2' : 'scalar');
    }
    assert.ok(ORDER.indexOf(a.isa()) <= ORDER.indexOf(a.supportedIsa()));
  });

  it('setIsa lowers and restores the path; refuses unknown names and unsupported ISAs', () => {
    const a = addon();
    for (const isa of isasHere()) {
      a.setIsa(isa);
      assert.equal(a.isa(), isa);
    }
    assert.throws(() => a.setIsa('sse9' as NativeIsa), /'sse9' is not one of scalar, avx2, avx512/);
    if (a.supportedIsa() !== 'avx512') assert.throws(() => a.setIsa('avx512'), /is not one of/);
    a.setIsa(a.supportedIsa());
  });

  it('FLOE_ISA forces a lower path in a fresh process', () => {
    const loader = repoUrl('src/backend/native-addon.ts').href;
    const script = `import(${JSON.stringify(loader)}).then((m) => console.log(m.loadAddon().isa()))`;
    for (const isa of isasHere()) {
      const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
        env: { ...process.env, FLOE_ISA: isa }, encoding: 'utf8',
      });
      assert.equal(out.trim(), isa);
    }
  });

  it('setThreads / getThreads, and results do not depend on the thread count', () => {
    const a = addon();
    withSeed('threads', (rng) => {
      const [M, N, C] = [5, 300, 200];
      const w = quantizeTensor(rng.normals(N * C), [N, C], 'bf16');
      const x = rng.normals(M * C);
      const ys: Float32Array[] = [];
      for (const t of [1, 2, 3]) {
        a.setThreads(t);
        assert.equal(a.getThreads(), t);
        const y = new Float32Array(M * N);
        backend().matmul(y, x, w, M);
        ys.push(y);
      }
      assert.deepEqual(ys[1], ys[0]);
      assert.deepEqual(ys[2], ys[0]);
    });
    assert.throws(() => a.setThreads(0), /n must be an integer >= 1, got 0/);
    a.setThreads(initialThreads ?? 1);
  });

  describe('mmapFile', () => {
    const dir = mkdtempSync(join(tmpdir(), 'floe-mmap-'));
    after(() => rmSync(dir, { recursive: true, force: true }));

    it('maps a file read-only-in-effect: bytes match, writes stay private', () => {
      const bytes = new Rng(7).f32(1000);
      const path = join(dir, 'w.bin');
      const raw = new Uint8Array(bytes.buffer);
      writeFileSync(path, raw);
      const buf = addon().mmapFile(path);
      assert.equal(buf.byteLength, raw.byteLength);
      const view = new Uint8Array(buf);
      assert.deepEqual(view, raw);
      view[0] = view[0]! ^ 0xff; // private copy-on-write page: must not crash nor reach the file
      assert.deepEqual(new Uint8Array(readFileSync(path)), raw);
      writeFileSync(join(dir, 'empty.bin'), new Uint8Array(0));
      assert.equal(addon().mmapFile(join(dir, 'empty.bin')).byteLength, 0);
    });

    it('names the path and errno when it cannot map', () => {
      const missing = join(dir, 'nope.safetensors');
      assert.throws(() => addon().mmapFile(missing), (e: Error) => e.message.includes(missing) && /ENOENT|No such file/.test(e.message) && /errno 2/.test(e.message));
      assert.throws(() => addon().mmapFile(dir), /is not a regular file/);
    });
  });

  describe('argument errors are JS errors with expected vs got', () => {
    const be = (): Backend => backend();
    const w = quantizeTensor(new Rng(1).normals(4 * 64), [4, 64], 'bf16');

    it('matmul', () => {
      assert.throws(() => be().matmul(new Float32Array(8), new Float32Array(127), w, 2), /x \(M=2, C=64\) has 127 elements, expected 128/);
      assert.throws(() => be().matmul(new Float32Array(7), new Float32Array(128), w, 2), /y \(M=2, N=4\) has 7 elements, expected 8/);
      const ints = new Tensor('i32', [4, 64], new Uint8Array(4 * 64 * 4));
      assert.throws(() => be().matmul(new Float32Array(4), new Float32Array(64), ints, 1), /native.matmul has no i32 kernel/);
      const a = addon();
      assert.throws(() => a.matmul(new Float32Array(4), new Float64Array(64) as unknown as Float32Array, w.data, 2, 4, 64, null, 1, 1, 1), TypeError);
      assert.throws(() => a.matmul(new Float32Array(4), new Float32Array(64), w.data.subarray(1), 2, 4, 64, null, 1, 1, 1), /bf16 weight \(4, 64\) bytes has 511 elements, expected 512/);
      assert.throws(() => a.matmul(new Float32Array(4), new Float32Array(64), new Uint8Array(4 * 64), 3, 4, 64, new Float32Array(3), 1, 64, 1), /fp8 scale grid for block \[1,64\] has 3 elements, expected 4/);
      assert.throws(() => a.matmul(new Float32Array(4), new Float32Array(48), new Uint8Array(4 * 34), 4, 4, 48, null, 1, 1, 1), /q8_0 rows must be a multiple of 32 columns, got C=48/);
      assert.throws(() => a.matmul(new Float32Array(4), new Float32Array(64), w.data, 2, 4, 64, null, 1, 1, 1.5), /M must be an integer >= 0, got 1.5/);
    });

    it('embedding, rope, kvWrite, attention, logSoftmax, topk', () => {
      assert.throws(() => be().embedding(new Float32Array(64), w, Int32Array.of(4)), /token id 4 at position 0 is outside \[0, 4\)/);
      assert.throws(() => be().rope(new Float32Array(6), Int32Array.of(0), 2, 3, new Float32Array(1)), /headDim must be even, got 3/);
      const layer = { dtype: 'bf16' as const, k: new Uint8Array(2 * 4 * 8 * 2), v: new Uint8Array(2 * 4 * 8 * 2), numBlocks: 2, blockSize: 4, numKvHeads: 1, headDim: 8 };
      assert.throws(() => be().kvWrite(layer, new Float32Array(8), new Float32Array(8), Int32Array.of(8)), /slot 8 of token 0 is outside \[0, 8\)/);
      assert.throws(() => be().kvWrite({ ...layer, k: layer.k.subarray(2) }, new Float32Array(8), new Float32Array(8), Int32Array.of(0)), /cache k bytes .* has 126 elements, expected 128/);
      const batch = { numSeqs: 1, qStart: Int32Array.of(0, 1), ctxLen: Int32Array.of(5), blockTables: Int32Array.of(0, 2), maxBlocks: 2 };
      const shape = { numHeads: 2, numKvHeads: 1, headDim: 8, scale: 0.3 };
      assert.throws(() => be().attention(new Float32Array(16), new Float32Array(16), layer, shape, batch), /sequence 0 block 1 maps to block 2, outside \[0, 2\)/);
      assert.throws(() => be().attention(new Float32Array(16), new Float32Array(16), layer, shape, { ...batch, ctxLen: Int32Array.of(9) }), /ctxLen 9 needs more than maxBlocks 2/);
      const layer2 = { ...layer, numKvHeads: 2, headDim: 4 };
      assert.throws(() => be().attention(new Float32Array(12), new Float32Array(12), layer2, { numHeads: 3, numKvHeads: 2, headDim: 4, scale: 0.5 }, batch), /numHeads 3 is not a multiple of numKvHeads 2/);
      assert.throws(() => be().logSoftmax(new Float32Array(10), new Float32Array(10), 3), /logits length 10 is not a multiple of M=3/);
      assert.throws(() => be().topk(new Float32Array(3), 4), /k=4 outside \[0, 3\]/);
    });
  });

  // Each ISA path against plain TS, with the counter proving that path ran.
  for (const isa of ORDER) {
    describe(`${isa} path`, () => {
      const skip = !loadAddon() || ORDER.indexOf(isa) > ORDER.indexOf(loadAddon()!.supportedIsa());
      const run = <T>(fn: () => T): T => {
        const a = addon();
        const prev = a.isa();
        a.setIsa(isa);
        try { return fn(); } finally { a.setIsa(prev); }
      };
      const ranOn = (key: string, fn: () => void): void => {
        const before = nativeCounters()[key] ?? 0;
        run(fn);
        assert.ok((nativeCounters()[key] ?? 0) > before, `counter ${key} did not increase`);
      };

      for (const dtype of WEIGHT_DTYPES) {
        it(`matmul ${dtype}: decode tiles and batch rows (path counters), tails, fp8 block grids`, { skip }, () => {
          for (const [M, C, N, block] of [[1, 96, 7, [1, 96]], [9, 160, 9, [4, 64]], [19, 64, 13, [13, 64]], [12, 288, 5, [2, 32]], [4, 96, 6, [1, 20]], [10, 224, 3, [2, 48]], [2, 320, 5, [2, 128]], [3, 224, 4, [1, 64]]] as const) {
            withSeed(`${isa} matmul ${dtype} M=${M} C=${C} N=${N}`, (rng) => {
              const w = quantizeTensor(rng.normals(N * C), [N, C], dtype, { fp8Block: block });
              const x = rng.normals(M * C);
              const y = new Float32Array(M * N).fill(NaN);
              const path = isa === 'avx512' ? avx512MatmulPath(dtype, M, N, C) : isa === 'avx2' ? 'tiles' : 'generic';
              ranOn(`matmul.path.${path}.${isa}`, () => backend().matmul(y, x, w, M));
              const want = f64Matmul(x, w, M);
              assertClose(`matmul ${dtype}`, y, want.y, { atol: 1e-6, rtol: RTOL[dtype], mag: want.mag });
            });
          }
        });
      }

      it('fp8 and bf16 weights convert exactly (all 256 fp8 codes, NaN included)', { skip }, () => {
        // w (256, 1) times x = [1]: y is each weight itself, exact in every path (NaN codes stay NaN)
        const N = 256;
        const fp8 = new Tensor('fp8_e4m3', [N, 1], Uint8Array.from({ length: N }, (_, i) => i), new Float32Array(N).fill(0.5), [1, 1]);
        const bf = quantizeTensor(new Rng(3).f32(N, -100, 100), [N, 1], 'bf16');
        for (const w of [fp8, bf]) {
          const y = new Float32Array(N);
          run(() => backend().matmul(y, Float32Array.of(1), w, 1));
          const want = new Float32Array(N);
          for (let n = 0; n < N; n++) dequantizeRow(w, n, want.subarray(n, n + 1));
          want.forEach((v, n) => { want[n] = v + 0; }); // a dot product's sum starts at +0: -0 becomes +0
          assert.deepEqual(y, want, `${w.dtype} weights`);
          if (w.dtype === 'fp8_e4m3') assert.ok(Number.isNaN(y[0x7f]!) && Number.isNaN(y[0xff]!) && y[1] === 2 ** -10, 'fp8 NaN and subnormal codes');
        }
      });

      it('rope: short steps (cos/sin rows cached per position) equal a long call bitwise; inv_freq changed in place, positions sharing a slot', { skip }, () => {
        withSeed(`${isa} rope cache`, (rng) => {
          const [H, E, T] = [3, 16, 40];  // T > 32: the long call computes every row anew
          const pos = Int32Array.from({ length: T }, (_, i) => (i < 20 ? 900 + i : 900 + (i - 20) * 64 + 3));  // slots shared
          const q = rng.normals(T * H * E);
          const inv = Float32Array.from({ length: E / 2 }, (_, i) => 10000 ** (-2 * i / E));
          const long = (): Float32Array => { const r = q.slice(); ranOn(`rope.${isa}`, () => backend().rope(r, pos, H, E, inv)); return r; };
          /** rope over rows [from, to) of q in one short call, compared bitwise with the long call's rows */
          const short = (want: Float32Array, rows: number[], what: string): void => {
            const p = Int32Array.from(rows, (t) => pos[t]!);
            const x = new Float32Array(rows.length * H * E);
            rows.forEach((t, j) => x.set(q.subarray(t * H * E, (t + 1) * H * E), j * H * E));
            ranOn(`rope.${isa}`, () => backend().rope(x, p, H, E, inv));
            rows.forEach((t, j) => assert.deepEqual(x.subarray(j * H * E, (j + 1) * H * E), want.subarray(t * H * E, (t + 1) * H * E), `${what}: row ${t} (position ${pos[t]})`));
          };
          const a = long();
          short(a, [0, 1, 2, 3, 4], 'decode positions');
          short(a, [0, 1, 2, 3, 4], 'the same positions again (from the cache)');
          short(a, [2, 3, 4, 5, 6, 7, 8], 'a verify step over cached and new positions');
          short(a, [20, 21, 22, 23], 'positions 64 apart (one cache slot)');
          short(a, [21], 'one of them alone');
          for (let i = 0; i < inv.length; i++) inv[i] = inv[i]! * 0.25;  // the same buffer, new values (rope scaling)
          const b = long();
          assert.notDeepEqual(a.subarray(0, H * E), b.subarray(0, H * E), 'new angles');
          short(b, [0, 1, 2, 3, 4], 'after inv_freq changed in place');
        });
      });

      it('rmsnorm, rope, swiglu, add, logSoftmax agree with plain TS', { skip }, () => {
        withSeed(`${isa} elementwise`, (rng) => {
          const [M, D] = [3, 70];
          const x = rng.normals(M * D);
          const g = rng.normals(D);
          const y = new Float32Array(M * D);
          ranOn(`rmsnorm.${isa}`, () => backend().rmsnorm(y, x, g, M, 1e-5));
          const want = new Float64Array(M * D);
          for (let m = 0; m < M; m++) {
            let ss = 0;
            for (let d = 0; d < D; d++) ss += x[m * D + d]! ** 2;
            for (let d = 0; d < D; d++) want[m * D + d] = x[m * D + d]! / Math.sqrt(ss / D + 1e-5) * g[d]!;
          }
          assertClose('rmsnorm', y, want, { atol: 1e-6, rtol: 1e-5 });

          const [T, H, E] = [3, 2, 8];
          const q = rng.normals(T * H * E);
          const pos = Int32Array.of(0, 7, 1000);
          const inv = Float32Array.from({ length: E / 2 }, (_, i) => 10000 ** (-2 * i / E));
          const r = q.slice();
          ranOn(`rope.${isa}`, () => backend().rope(r, pos, H, E, inv));
          const wantR = new Float64Array(T * H * E);
          for (let t = 0; t < T; t++) for (let h = 0; h < H; h++) for (let i = 0; i < E / 2; i++) {
            const ang = Math.fround(pos[t]! * inv[i]!);
            const o = (t * H + h) * E;
            wantR[o + i] = q[o + i]! * Math.cos(ang) - q[o + i + E / 2]! * Math.sin(ang);
            wantR[o + i + E / 2] = q[o + i + E / 2]! * Math.cos(ang) + q[o + i]! * Math.sin(ang);
          }
          assertClose('rope', r, wantR, { atol: 1e-5, rtol: 1e-5 });

          const gate = rng.normals(37, 4);
          const up = rng.normals(37);
          const s = new Float32Array(37);
          ranOn(`swiglu.${isa}`, () => backend().swiglu(s, gate, up));
          assertClose('swiglu', s, Float64Array.from(gate, (v, i) => v / (1 + Math.exp(-v)) * up[i]!), { atol: 1e-6, rtol: 1e-5 });

          const acc = up.slice();
          ranOn(`add.${isa}`, () => backend().add(acc, gate));
          assertClose('add', acc, Float64Array.from(up, (v, i) => v + gate[i]!), { atol: 0, rtol: 1e-7 });

          const logits = rng.normals(2 * 50, 5);
          const ls = new Float32Array(100);
          ranOn(`logSoftmax.${isa}`, () => backend().logSoftmax(ls, logits, 2));
          const wantL = new Float64Array(100);
          for (let m = 0; m < 2; m++) {
            const row = Array.from(logits.subarray(m * 50, m * 50 + 50));
            const mx = Math.max(...row);
            const lse = mx + Math.log(row.reduce((a, v) => a + Math.exp(v - mx), 0));
            for (let v = 0; v < 50; v++) wantL[m * 50 + v] = row[v]! - lse;
          }
          assertClose('logSoftmax', ls, wantL, { atol: 1e-5, rtol: 1e-6 });
        });
      });

      for (const kvDtype of ['f32', 'bf16'] as const) {
        it(`kvWrite + attention (${kvDtype} cache, GQA, two sequences) agree with plain TS`, { skip }, () => {
          withSeed(`${isa} attention ${kvDtype}`, (rng) => {
            const [H, K, E, L, numBlocks] = [4, 2, 16, 4, 6];
            const layer = { dtype: kvDtype, k: new Uint8Array(numBlocks * L * K * E * (kvDtype === 'f32' ? 4 : 2)), v: new Uint8Array(numBlocks * L * K * E * (kvDtype === 'f32' ? 4 : 2)), numBlocks, blockSize: L, numKvHeads: K, headDim: E };
            // seq 0: 9 cached tokens in blocks [3, 0, 5], 3 new queries; seq 1: 2 tokens in block [1], 1 query
            const tables = Int32Array.of(3, 0, 5, 1, 0, 0);
            const ctx = [9, 2];
            const slot = (s: number, i: number): number => tables[s * 3 + Math.floor(i / L)]! * L + (i % L);
            const keys: Float32Array[] = [];
            const vals: Float32Array[] = [];
            for (let s = 0; s < 2; s++) {
              const k = rng.normals(ctx[s]! * K * E);
              const v = rng.normals(ctx[s]! * K * E);
              keys.push(k); vals.push(v);
              ranOn(`kvWrite.${kvDtype}.${isa}`, () => backend().kvWrite(layer, k, v, Int32Array.from({ length: ctx[s]! }, (_, i) => slot(s, i))));
            }
            const round = (a: number): number => (kvDtype === 'bf16' ? bf16ToF32(f32ToBf16(a)) : a);
            const qLen = [3, 1];
            const q = rng.normals(4 * H * E);
            const out = new Float32Array(4 * H * E);
            const batch = { numSeqs: 2, qStart: Int32Array.of(0, 3, 4), ctxLen: Int32Array.from(ctx), blockTables: tables, maxBlocks: 3 };
            ranOn(`attention.${kvDtype}kv.${isa}`, () => backend().attention(out, q, layer, { numHeads: H, numKvHeads: K, headDim: E, scale: 0.25 }, batch));
            const want = new Float64Array(4 * H * E);
            for (let s = 0; s < 2; s++) for (let j = 0; j < qLen[s]!; j++) for (let h = 0; h < H; h++) {
              const row = batch.qStart[s]! + j;
              const pos = ctx[s]! - qLen[s]! + j;
              const kvh = Math.floor(h / (H / K));
              const sc: number[] = [];
              for (let i = 0; i <= pos; i++) {
                let d = 0;
                for (let e = 0; e < E; e++) d += q[(row * H + h) * E + e]! * round(keys[s]![(i * K + kvh) * E + e]!);
                sc.push(d * 0.25);
              }
              const mx = Math.max(...sc);
              const p = sc.map((v) => Math.exp(v - mx));
              const sum = p.reduce((a, b) => a + b, 0);
              for (let e = 0; e < E; e++) {
                let o = 0;
                for (let i = 0; i <= pos; i++) o += p[i]! * round(vals[s]![(i * K + kvh) * E + e]!);
                want[(row * H + h) * E + e] = o / sum;
              }
            }
            assertClose(`attention ${kvDtype}`, out, want, { atol: 1e-5, rtol: 1e-4 });
          });
        });
      }

      it('embedding gathers and dequantizes every weight dtype', { skip }, () => {
        withSeed(`${isa} embedding`, (rng) => {
          for (const dtype of WEIGHT_DTYPES) {
            const [V, D] = [11, 64];
            const table = quantizeTensor(rng.normals(V * D), [V, D], dtype, { fp8Block: [2, 32] });
            const ids = Int32Array.of(10, 0, 3, 3);
            const out = new Float32Array(ids.length * D);
            ranOn(`embedding.${dtype}.${isa}`, () => backend().embedding(out, table, ids));
            const row = new Float32Array(D);
            ids.forEach((id, t) => { dequantizeRow(table, id, row); assert.deepEqual(out.subarray(t * D, (t + 1) * D), row, `${dtype} row ${id}`); });
          }
        });
      });
    });
  }

  it('topk: sorted descending, ties by lower index, NaN last', () => {
    withSeed('topk', (rng) => {
      const x = Float32Array.from({ length: 500 }, () => rng.int(-20, 20) / 4);
      x[17] = NaN;
      for (const k of [0, 1, 7, 500]) {
        const { ids, values } = backend().topk(x, k);
        const order = Array.from(x.keys()).sort((a, b) => {
          const [va, vb] = [x[a]!, x[b]!];
          if (Number.isNaN(va) !== Number.isNaN(vb)) return Number.isNaN(va) ? 1 : -1;
          return (Number.isNaN(va) ? 0 : vb - va) || a - b;
        });
        assert.deepEqual(Array.from(ids), order.slice(0, k));
        assert.deepEqual(Array.from(values), order.slice(0, k).map((i) => x[i]!));
      }
    });
  });
});
