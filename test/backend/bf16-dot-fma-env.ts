// Imported first by native-r16-fma.test.ts: the bf16 / fp8 decode GEMVs multiply on f32 FMA (FLOE_BF16_DOT=fma; the
// addon reads it when it first measures the host), the path a host with a slow vdpbf16ps takes; and the repacked GEMV
// stops at the packed GEMM's rows (FLOE_R16_WIDE=0), as on a core that retires two zmm FMAs a cycle. Both together are
// the Intel Xeons with AMX this project measured.
process.env.FLOE_BF16_DOT = 'fma';
process.env.FLOE_R16_WIDE = '0';
