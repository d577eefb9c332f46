// A backend whose every method call is timed (wall and process CPU) and handed to `onCall` while `on()` holds, for
// per-op profiles (decode-profile.ts, verify-ops.ts). ~1 µs per call of overhead while on; none otherwise.

import type { Backend } from '../src/backend/backend.js';

/** One timed call: the method, its arguments, wall nanoseconds and process CPU microseconds. */
export type OnCall = (method: string, args: readonly unknown[], ns: bigint, cpuUs: number) => void;

export function timedBackend<B extends Backend>(inner: B, on: () => boolean, onCall: OnCall): B {
  return new Proxy(inner, {
    get(target, prop, recv) {
      const v = Reflect.get(target, prop, recv) as unknown;
      if (typeof v !== 'function') return v;
      const fn = v as (...a: unknown[]) => unknown;
      return (...a: unknown[]) => {
        if (!on()) return fn.apply(target, a);
        const c = process.cpuUsage();
        const s = process.hrtime.bigint();
        const r = fn.apply(target, a);
        const ns = process.hrtime.bigint() - s;
        const cu = process.cpuUsage(c);
        onCall(String(prop), a, ns, cu.user + cu.system);
        return r;
      };
    },
  });
}
