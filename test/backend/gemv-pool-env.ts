// Imported first by GEMV tests whose shapes are small: it sends every GEMV call to the thread pool
// (FLOE_GEMV_SERIAL=0; the addon reads it when it loads), so that splitting output rows over 1-3 threads is what
// they test. By default calls that read under 256 KiB run on the calling thread.
process.env.FLOE_GEMV_SERIAL = '0';
