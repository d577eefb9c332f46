// Imported first by native-r16-wide.test.ts: the repacked GEMV also takes rows past the packed GEMM's
// (FLOE_R16_WIDE=1; the addon reads it when it first measures the host), as on a core that retires one zmm FMA a cycle.
process.env.FLOE_R16_WIDE = '1';
