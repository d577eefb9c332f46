// The repacked bf16 / f16 / fp8 suite (native-r16.test.ts) again with the bf16 products on f32 FMA, as on hosts where
// vdpbf16ps is slower than FMA (Intel Xeons with AMX; native/gemv512.inc dot_facts): the same oracle, row-layout,
// batch-invariance and fixture checks, and its counters prove the FMA kernels ran.
import './bf16-dot-fma-env.js'; // before the addon loads
import './native-r16.test.js';
