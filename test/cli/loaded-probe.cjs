// Preloaded by test/cli/startup.test.ts (node --require): at exit, prints which heavy packages the process loaded.
process.on('exit', () => {
  const names = new Set();
  for (const k of Object.keys(require.cache)) {
    const m = /node_modules[\\/](fastify|@lancedb)[\\/]/.exec(k);
    if (m) names.add(m[1]);
  }
  process.stderr.write(`\nfloe-loaded ${JSON.stringify([...names])}\n`);
});
