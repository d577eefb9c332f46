// A backend whose every method call is timed (wall, and process CPU unless `cpu: false`) and handed to `onCall` while
// `on()` holds, for per-op profiles (decode-profile.ts, verify-ops.ts). No overhead while off. While on, the CPU time
// (two getrusage calls) costs ~7 µs a call on a VM: on floe-brown it added ~640 µs to a ~730 µs step, so a
// profile that reads only wall time (verify-ops.ts) turns it off.

import type { Backend } from '../src/backend/backend.js';
import type { Tensor } from '../src/tensor/tensor.js';

/** One timed call: the method, its arguments, wall nanoseconds and process CPU microseconds. */
export type OnCall = (method: string, args: readonly unknown[], ns: bigint, cpuUs: number) => void;

export function timedBackend<B extends Backend>(inner: B, on: () => boolean, onCall: OnCall, opts: { cpu?: boolean } = {}): B {
  const cpu = opts.cpu ?? true;
  return new Proxy(inner, {
    get(target, prop, recv) {
      const v = Reflect.get(target, prop, recv) as unknown;
      if (typeof v !== 'function') return v;
      const fn = v as (...a: unknown[]) => unknown;
      return (...a: unknown[]) => {
        if (!on()) return fn.apply(target, a);
        const c = cpu ? process.cpuUsage() : null;
        const s = process.hrtime.bigint();
        const r = fn.apply(target, a);
        const ns = process.hrtime.bigint() - s;
        const cu = c ? process.cpuUsage(c) : null;
        onCall(String(prop), a, ns, cu ? cu.user + cu.system : 0);
        return r;
      };
    },
  });
}

/** The weights a timed call reads: matmul's one (args[2]), matmulMany's list (q/k/v or gate/up); null for other ops. */
export function matmulWeights(method: string, args: readonly unknown[]): Tensor[] | null {
  return method === 'matmul' ? [args[2] as Tensor] : method === 'matmulMany' ? (args[2] as Tensor[]) : null;
}
