// Imported first by native-r16-fma.test.ts: the bf16 / fp8 decode GEMVs multiply on f32 FMA (FLOE_BF16_DOT=fma; the
// addon reads it when it first measures the host), the path a host with a slow vdpbf16ps takes.
process.env.FLOE_BF16_DOT = 'fma';
