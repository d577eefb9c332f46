#!/usr/bin/env bash
# The AMX checks and figures of BENCHMARKS.md "Session 14" and "Session 15", in one go, on a host with amx_tile
# (Intel Sapphire / Emerald Rapids or later):
# - the tile GEMM against the reference backend (backend, train and model suites, AMX on and off);
# - the GEMM alone against floe's AVX-512 path and PyTorch;
# - 1B bf16 prefill and the 1B LoRA step against PyTorch bf16 and against floe with FLOE_AMX=0;
# - the int8 q8_0r16 tiles by M, and 16-stream q8_0 decode against llama.cpp called directly (bench/decode-streams.ts;
#   the harness needs `npm run setup --prefix bench`);
# - the bf16 / fp8 decode GEMVs with the bf16 products on f32 FMA against vdpbf16ps (FLOE_BF16_DOT), by M and at 16
#   fp8 streams;
# - the LoRA step's factor products and AdamW, native and fused (session 29): bench/lora-train-micro.ts and the
#   in-process A/B bench/train-ab.ts (FLOE_TRAIN_FUSED=0 against the default), their expected gain ~1.1x the step there.
# - prefill attention's QKᵀ and PV on the tiles (native/attn_amx.inc, session 31): opt-in on real tiles until it has
#   run there, so the suites run again with FLOE_AMX_ATTN=1 (every prefill of the model suites on it), then
#   bench/attention-micro.ts times it against the AVX-512 kernel, the two alternating rep by rep. If tests-attn.txt
#   shows no failure, the kernel can become the default on AMX hosts (dispatch.cc amx_attn_active).
# - the tile GEMM's 2 x 2 blocking (FLOE_AMX_GEMM_BLOCK=22, amx.inc kern22; bitwise the default's, tested): the GEMM
#   micro and the LoRA step with it against the default 2 x 3 (one A and one B tile register, so loads wait on products).
# - the int8 q8_0r16 kernel with 4 weight groups per x block (FLOE_AMX_Q8_GROUPS=4; bitwise the default's, tested): the
#   kernel at 16 and 24 rows and 16-stream decode with it (the 1.5x-llama.cpp target reached 1.35x in session 15).
# - the bf16r16 / f16r16 verify rows in one pass by halves of the chains (session 37; bf16 8-12 rows, f16 5-8): on
#   Zen 4 0.75-0.92x (bf16, vdpbf16ps) and level with FMA products, the choice on these hosts; stage halves A/Bs them.
# - f32 weights repacked (f32r16, session 38; the built-in models are f32): on Zen 4 0.49-1.02x the row layout's
#   GEMV / tiles / GEMM time; stage f32r16 A/Bs the kernel and floe-brown's decode.
# - a layer's neighbouring ops as one native call (session 39: matmulMany for q/k/v and gate/up, addRmsnorm,
#   ropeKvWrite; bitwise the separate calls, tested): on Zen 4 1.09-1.13x floe-brown's forward steps at 2 threads;
#   stage fused runs bench/step-ab.ts on floe-brown and its draft.
# - training's dense attention backward in one pass over key tiles (session 40; f32 FMA tiles, the same code on every
#   host): on Zen 4 1.26-1.33x the backward of a 1B / 8B layer, 424 -> 284-295 ms of the 1B LoRA step. Stage attntrain
#   times it (bench/attn-train-micro.ts, against the f32 FMA peak); on the s14 AMX profile it was 8% of the step.
#   The LoRA backward at rank 8 (floe's default) no longer stalls on masked stores (0.89x -> 1.63-1.68x the fallback
#   on Zen 4); stage lora now times rank 8 too.
# - the repacked GEMV past the packed GEMM's rows by a host fact (session 41): off where the core retires two zmm FMAs a
#   cycle (the Xeons should read ~2 in bf16Dot().fmaPerCycle), so f32r16 / f16r16 prefill rows take the AVX-512 GEMM
#   from 96 and bf16r16 / fp8r16 the tiles. On Zen 5 the GEMV had taken 1.13-2.15x the GEMM's time there. Stage
#   r16wide prints the probe and A/Bs it (old = FLOE_R16_WIDE=1).
# Two threads, as in issue #9. Needs floe installed (npm install) and, for the PyTorch peer, a python with torch
# (FLOE_PYTHON, default /usr/bin/python3).
#
# usage: bash bench/amx-host.sh [OUT_DIR]      (default bench/results/amx-<date>; SHAPE=small for a quick pass)
#        STAGES="tests-attn attn" bash bench/amx-host.sh OUT   runs only the named stages, in the order written below
# Stages, newest first (a device lease is short: 15 minutes, 10 a command): r16wide tests-attn attn attntrain fused f32r16 block22 q8g4 pfl2
# halves lora tests micro core train q8 bf16dot. Each stage's start time goes to the log.
set -u
cd "$(dirname "$0")/.."
OUT=${1:-bench/results/amx-$(date -u +%Y-%m-%d-%H-%M)}
S=${SHAPE:-1b}
PY=${FLOE_PYTHON:-/usr/bin/python3}
STAGES=${STAGES:-"r16wide tests-attn attn attntrain fused f32r16 block22 q8g4 pfl2 halves lora tests micro core train q8 bf16dot"}
mkdir -p "$OUT"
L=$OUT/log.txt
grep -q amx_tile /proc/cpuinfo || echo "note: no amx_tile on this host: the AMX rows will be AVX-512 (or emulated) figures" | tee -a "$L"
grep -m1 "model name" /proc/cpuinfo | tee -a "$L"
node -e "const a=require('./build/Release/floe.node'); console.log(JSON.stringify(a.amx()), a.isa())" | tee -a "$L"
# the suites that exercise the kernels without the server's dependencies
TESTS="test/backend/*.test.ts test/train/*.test.ts test/model/fixtures.test.ts test/model/batch-invariance.test.ts test/model/long-context.test.ts test/model/lora-segments.test.ts"
want() { case " $STAGES " in *" $1 "*) echo "== stage $1 ($(date -u +%H:%M:%S))" | tee -a "$L"; return 0;; *) return 1;; esac; }

# prefill attention on the tiles (session 31), opt-in there until these pass: the AMX attention test and the model
# suites that prefill through it, then the kernel against the AVX-512 one
if want tests-attn; then
  FLOE_AMX_ATTN=1 node --import tsx --test --test-concurrency=4 test/backend/native-attn-amx.test.ts test/backend/conformance.test.ts test/model/fixtures.test.ts test/model/batch-invariance.test.ts test/model/long-context.test.ts test/model/lora-segments.test.ts > "$OUT/tests-attn.txt" 2>&1
  echo "tests (FLOE_AMX_ATTN=1) rc $?" | tee -a "$L"; grep -E "^# (tests|pass|fail)" "$OUT/tests-attn.txt" | tee -a "$L"
fi
if want attn; then
  node --import tsx bench/attention-micro.ts --dims 64,128 --ctx 4096,32768 --kv bf16,fp8_e4m3 --no-decode --amx tiles,off --reps 3 > "$OUT/attn.txt" 2>&1
  echo "attention-micro rc $?" | tee -a "$L"; grep -E "prefill|/ off" "$OUT/attn.txt" | tee -a "$L"
fi
# the tile GEMM's 2 x 2 blocking (session 31): its test on real tiles, the GEMM micro and the LoRA step with it
if want block22; then
  node --import tsx --test test/backend/native-amx-block.test.ts > "$OUT/tests-block22.txt" 2>&1; echo "block22 test rc $?" | tee -a "$L"
  node --import tsx bench/matmul-micro.ts --dtypes bf16,fp8 --m 512 --ops fwd,bwd --threads 2 --reps 3 --ab FLOE_AMX_GEMM_BLOCK=22 > "$OUT/micro-block22.txt" 2>&1
  echo "micro (old = FLOE_AMX_GEMM_BLOCK=22) rc $?" | tee -a "$L"; tail -6 "$OUT/micro-block22.txt" | tee -a "$L"
  FLOE_AMX_GEMM_BLOCK=22 node --import tsx bench/train.ts --shapes "$S" --bases bf16 --ckpt off --threads 2 --no-torch --steps 2 --out "$OUT/train-block22.json" > "$OUT/train-block22.txt" 2>&1
  echo "train (FLOE_AMX_GEMM_BLOCK=22) rc $?" | tee -a "$L"; grep -hE "^(1b|small) +bf16" "$OUT/train-block22.txt" | tee -a "$L"
fi
# the LoRA step's factor products and AdamW, native and fused (session 29)
if want lora; then
  node --import tsx bench/lora-train-micro.ts --threads 2 --reps 5 > "$OUT/lora-train-micro.txt" 2>&1
  echo "lora-train-micro rc $?" | tee -a "$L"; tail -12 "$OUT/lora-train-micro.txt" | tee -a "$L"
  # rank 8, floe's default (session 40: its backward had stalled on masked stores, 0.89x the fallback on Zen 4)
  node --import tsx bench/lora-train-micro.ts --threads 2 --reps 5 --rank 8 > "$OUT/lora-train-micro-r8.txt" 2>&1
  echo "lora-train-micro rank 8 rc $?" | tee -a "$L"; tail -3 "$OUT/lora-train-micro-r8.txt" | tee -a "$L"
  node --import tsx bench/train-ab.ts --shape "$S" --threads 2 --steps 6 --out "$OUT/train-ab.json" > "$OUT/train-ab.txt" 2>&1
  echo "train-ab rc $?" | tee -a "$L"; tail -6 "$OUT/train-ab.txt" | tee -a "$L"
fi
if want tests; then
  node --import tsx --test --test-concurrency=4 $TESTS > "$OUT/tests.txt" 2>&1; echo "tests rc $?" | tee -a "$L"
  grep -E "^# (tests|pass|fail)" "$OUT/tests.txt" | tee -a "$L"
fi
if want micro; then
  node --import tsx bench/matmul-micro.ts --dtypes bf16,fp8 --m 512 --ops fwd,bwd --threads 2 --reps 3 --ab FLOE_AMX=0 > "$OUT/micro.txt" 2>&1
  echo "micro rc $?" | tee -a "$L"
fi
if want core; then
  FLOE_PYTHON=$PY node --import tsx bench/core.ts --shapes "$S" --formats bf16 --threads 2 --engines floe,torch --decode 16 --torch-dtypes bf16 --out "$OUT/core.json" > "$OUT/core.txt" 2>&1
  echo "core rc $?" | tee -a "$L"
  FLOE_AMX=0 node --import tsx bench/core.ts --shapes "$S" --formats bf16 --threads 2 --engines floe --decode 4 --out "$OUT/core-noamx.json" >> "$OUT/core.txt" 2>&1
  echo "core (FLOE_AMX=0) rc $?" | tee -a "$L"
fi
if want train; then
  FLOE_PYTHON=$PY node --import tsx bench/train.ts --shapes "$S" --bases bf16 --ckpt off --threads 2 --torch-dtypes bf16 --no-torch-ckpt --steps 2 --torch-steps 2 --out "$OUT/train.json" > "$OUT/train.txt" 2>&1
  echo "train rc $?" | tee -a "$L"
  FLOE_AMX=0 node --import tsx bench/train.ts --shapes "$S" --bases bf16 --ckpt off --threads 2 --no-torch --steps 2 --out "$OUT/train-noamx.json" >> "$OUT/train.txt" 2>&1
  echo "train (FLOE_AMX=0) rc $?" | tee -a "$L"
fi
# int8 tiles for q8_0r16 (session 15): the kernel by M against the VNNI paths, and 16-stream decode vs llama.cpp direct
if want q8; then
  node --import tsx bench/matmul-micro.ts --dtypes q8_0r16 --m 4,8,16,64,512 --threads 2 --reps 2 --rotate 8 --ab FLOE_AMX=0 > "$OUT/micro-q8.txt" 2>&1
  echo "micro q8_0r16 rc $?" | tee -a "$L"
  node --import tsx bench/decode-streams.ts --shape "$S" --streams 1,16 --prompt 128 --decode 32 --threads 2 --amx tiles,off --rounds 2 --out "$OUT/decode-streams.json" > "$OUT/decode-streams.txt" 2>&1
  echo "decode-streams rc $?" | tee -a "$L"; tail -9 "$OUT/decode-streams.txt" | tee -a "$L"
fi
# the int8 kernel with 4 weight groups per x block (session 31, FLOE_AMX_Q8_GROUPS=4, q8r_kern4; bitwise the default's)
if want q8g4; then
  node --import tsx bench/matmul-micro.ts --dtypes q8_0r16 --m 16,24 --threads 2 --reps 3 --rotate 8 --ab FLOE_AMX_Q8_GROUPS=4 > "$OUT/micro-q8g4.txt" 2>&1
  echo "micro q8_0r16 (old = FLOE_AMX_Q8_GROUPS=4) rc $?" | tee -a "$L"; tail -8 "$OUT/micro-q8g4.txt" | tee -a "$L"
  FLOE_AMX_Q8_GROUPS=4 node --import tsx bench/decode-streams.ts --shape "$S" --streams 16 --prompt 128 --decode 32 --threads 2 --amx tiles --rounds 2 --out "$OUT/decode-streams-q8g4.json" > "$OUT/decode-streams-q8g4.txt" 2>&1
  echo "decode-streams (FLOE_AMX_Q8_GROUPS=4) rc $?" | tee -a "$L"; tail -9 "$OUT/decode-streams-q8g4.txt" | tee -a "$L"
fi
# the VNNI / fp8 rows' far prefetch into L2 (session 35, measured on Zen 4 only): the kernels by M with the old L1
# prefetch (FLOE_PF_L2=0) against the new, the int8 tiles off so the vector rows run
if want pfl2; then
  FLOE_AMX=0 node --import tsx bench/matmul-micro.ts --dtypes q8_0r16,fp8r16 --m 2,3,5,9,16 --shapes 8192x2048,2048x8192 --threads 2 --reps 5 --rotate 32 --ab FLOE_PF_L2=0 > "$OUT/micro-pfl2.txt" 2>&1
  echo "micro (old = FLOE_PF_L2=0) rc $?" | tee -a "$L"; tail -20 "$OUT/micro-pfl2.txt" | tee -a "$L"
fi
# the bf16 products of the bf16 / fp8 decode GEMVs (session 17): the probe's choice (FMA expected on these hosts,
# where vdpbf16ps runs at half FMA's rate), the kernel by M with each, and fp8 16-stream decode with each
if want r16wide; then
  node -e 'import("./dist/src/backend/native-addon.js").then((m) => console.log(JSON.stringify(m.loadAddon()?.bf16Dot())))' > "$OUT/r16wide-facts.txt" 2>&1
  echo "host facts: $(cat "$OUT/r16wide-facts.txt")" | tee -a "$L"
  node --import tsx bench/matmul-micro.ts --dtypes f16r16,f32r16,bf16r16 --m 96,160,512 --shapes 2048x2048,8192x2048,704x256 --threads 2 --reps 5 --ab FLOE_R16_WIDE=1 > "$OUT/micro-r16wide.txt" 2>&1
  echo "micro r16 GEMV past the GEMM (old = FLOE_R16_WIDE=1) rc $?" | tee -a "$L"; tail -28 "$OUT/micro-r16wide.txt" | tee -a "$L"
fi
if want attntrain; then
  node --import tsx bench/attn-train-micro.ts --threads 2 --reps 5 --shapes 1b,8b --T 512,2048 --out "$OUT/attn-train-micro.json" > "$OUT/attn-train-micro.txt" 2>&1
  echo "training attention forward / backward by layer rc $?" | tee -a "$L"; tail -5 "$OUT/attn-train-micro.txt" | tee -a "$L"
fi
if want fused; then
  for m in floe-brown floe-brown-draft; do
    node --import tsx bench/step-ab.ts --model models/$m --threads 2 --rows 1,4,8 --out "$OUT/step-ab-$m.json" > "$OUT/step-ab-$m.txt" 2>&1
    echo "$m forward steps, fused calls (old = without matmulMany, addRmsnorm, ropeKvWrite) rc $?" | tee -a "$L"; tail -4 "$OUT/step-ab-$m.txt" | tee -a "$L"
  done
fi
if want f32r16; then
  node --import tsx bench/matmul-micro.ts --dtypes f32r16 --m 1,4,8,9,16,256 --shapes 704x256,4096x256,2048x2048 --threads 2 --reps 5 --rotate 16 --ab FLOE_F32_REPACK=0 > "$OUT/micro-f32r16.txt" 2>&1
  echo "micro f32r16 (old = FLOE_F32_REPACK=0) rc $?" | tee -a "$L"; tail -18 "$OUT/micro-f32r16.txt" | tee -a "$L"
  for t in 1 2; do
    node --import tsx bench/decode-ab.ts --model models/floe-brown --ab FLOE_F32_REPACK=0 --rounds 4 --reps 5 --tokens 256 --threads $t > "$OUT/decode-ab-f32r16-${t}t.txt" 2>&1
    echo "floe-brown decode f32r16 $t threads (old = FLOE_F32_REPACK=0) rc $?" | tee -a "$L"; tail -6 "$OUT/decode-ab-f32r16-${t}t.txt" | tee -a "$L"
  done
fi
if want halves; then
  node --import tsx bench/matmul-micro.ts --dtypes bf16r16 --m 8,9,12 --shapes 8192x2048,2048x8192 --threads 2 --reps 5 --rotate 32 --ab FLOE_BF16R_HALVES=0 > "$OUT/micro-bf16-halves.txt" 2>&1
  echo "micro bf16r16 halves (old = FLOE_BF16R_HALVES=0) rc $?" | tee -a "$L"; tail -6 "$OUT/micro-bf16-halves.txt" | tee -a "$L"
  node --import tsx bench/matmul-micro.ts --dtypes f16r16 --m 5,6,8 --shapes 8192x2048,2048x8192 --threads 2 --reps 5 --rotate 32 --ab FLOE_F16R_HALVES=0 > "$OUT/micro-f16-halves.txt" 2>&1
  echo "micro f16r16 halves (old = FLOE_F16R_HALVES=0) rc $?" | tee -a "$L"; tail -6 "$OUT/micro-f16-halves.txt" | tee -a "$L"
fi
if want bf16dot; then
  node -e "console.log('bf16Dot', JSON.stringify(require('./build/Release/floe.node').bf16Dot()))" | tee -a "$L"
  node --import tsx bench/matmul-micro.ts --dtypes bf16r16,fp8r16 --m 1,4,8,16 --shapes 8192x2048,2048x8192 --threads 2 --reps 5 --rotate 8 --ab FLOE_BF16_DOT=dpbf16 > "$OUT/micro-bf16-dot.txt" 2>&1
  echo "micro bf16 dot (old = dpbf16) rc $?" | tee -a "$L"; tail -17 "$OUT/micro-bf16-dot.txt" | tee -a "$L"
  for dot in fma dpbf16; do
    FLOE_BF16_DOT=$dot node --import tsx bench/decode-streams.ts --shape "$S" --format fp8 --streams 1,16 --prompt 128 --decode 32 --threads 2 --amx tiles --rounds 2 --no-harness --out "$OUT/decode-streams-fp8-$dot.json" > "$OUT/decode-streams-fp8-$dot.txt" 2>&1
    echo "decode-streams fp8 FLOE_BF16_DOT=$dot rc $?" | tee -a "$L"; grep -E "streams, round" "$OUT/decode-streams-fp8-$dot.txt" | tee -a "$L"
  done
fi
grep -hE "^(1b|small) +bf16" "$OUT"/core.txt "$OUT"/train.txt 2>/dev/null | tee -a "$L"
echo "== done ($(date -u +%H:%M:%S))" | tee -a "$L"
