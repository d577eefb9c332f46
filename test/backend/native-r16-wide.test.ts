// The repacked bf16 / f16 / fp8 / f32 suite (native-r16.test.ts) again with the GEMV past the packed GEMM's rows
// (FLOE_R16_WIDE=1), the choice of a core that retires one zmm FMA a cycle (Zen 4; native/gemv512.inc dot_facts),
// so that hosts which retire two (the default there is the GEMM from 96 rows) test it too, and native-r16-fma.test.ts
// (FLOE_R16_WIDE=0) the other way round: the same oracle, row-layout, batch-invariance and fixture checks.
import './r16-wide-env.js'; // before the addon loads
import './native-r16.test.js';
