// The part of jstat (no bundled types) the sampler tests use.

declare module 'jstat' {
  const jStat: { chisquare: { cdf(x: number, dof: number): number } };
  export default jStat;
}
