#!/usr/bin/env bash
# Decode and prefill of two floe checkouts on the same model files, alternating runs, with the read-bandwidth probe
# in every round: does this host's figure move between an older build and this one? (Hosts differ: kernels tuned on
# one CPU can lose on another, and the host's own speed drifts between minutes, so only alternating runs compare.)
#
# usage: bash bench/tree-ab.sh OLD_TREE [ROUNDS=3] [FORMATS="q8_0 bf16 f16 fp8"] [THREADS="1 2"] [DECODE=128]
#   OLD_TREE: another checkout with its own node_modules and built addon (e.g. `git worktree add /tmp/old <commit>`,
#   then `npm install` there). The model files and prompt are this tree's bench/.cache (written by bench/core.ts).
# Prints one line per run (round, format, threads, tree, prefill tok/s, decode tok/s) and per round the probe's GB/s;
# then, per format and threads, the median new / old decode and prefill ratios over the rounds.
set -euo pipefail
NEW=$(cd "$(dirname "$0")/.." && pwd)
OLD=$(cd "${1:?usage: tree-ab.sh OLD_TREE [ROUNDS] [FORMATS] [THREADS] [DECODE]}" && pwd)
ROUNDS=${2:-3}
FORMATS=${3:-"q8_0 bf16 f16 fp8"}
THREADS=${4:-"1 2"}
DECODE=${5:-128}
CACHE=$NEW/bench/.cache
PROMPT=$CACHE/prompt-128256-512.txt
[ -f "$PROMPT" ] || { echo "tree-ab: $PROMPT missing: run bench/core.ts --shapes 1b once first" >&2; exit 1; }
model() { case $1 in fp8) echo "$CACHE/1b-fp8-v1" ;; *) echo "$CACHE/1b-$1-v2.gguf" ;; esac; }
echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), family $(grep -m1 'cpu family' /proc/cpuinfo | cut -d: -f2 | xargs) model $(grep -m1 -E '^model\s' /proc/cpuinfo | cut -d: -f2 | xargs); amx: $(grep -q amx_tile /proc/cpuinfo && echo yes || echo no)"
echo "# new $NEW ($(git -C "$NEW" rev-parse --short HEAD)), old $OLD ($(git -C "$OLD" rev-parse --short HEAD)), decode $DECODE"
LOG=$(mktemp)
for r in $(seq 1 "$ROUNDS"); do
  for t in $THREADS; do
    bw=$("$CACHE/bandwidth" --mib 1024 --threads "$t" --reps 5 | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).gbps.toFixed(1)))')
    echo "round $r probe ${t}t $bw GB/s"
    for f in $FORMATS; do
      # ABBA order across rounds so neither tree always runs first
      if (( r % 2 )); then order="old new"; else order="new old"; fi
      for which in $order; do
        dir=$OLD; [ "$which" = new ] && dir=$NEW
        line=$(cd "$dir" && node --import tsx bench/run-floe.ts "$(model "$f")" "$PROMPT" "$t" "$DECODE")
        pp=$(node -e 'const o=JSON.parse(process.argv[1]);console.log(o.prefill_tps.toFixed(1), o.decode_tps.toFixed(2))' "$line")
        echo "round $r $f ${t}t $which $pp" | tee -a "$LOG"
      done
    done
  done
done
echo "# median new/old over rounds (prefill, decode)"
node -e '
const rows = require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n").map(l => l.split(" "));
const med = a => { a = [...a].sort((x, y) => x - y); const m = a.length >> 1; return a.length % 2 ? a[m] : (a[m - 1] + a[m]) / 2; };
const keys = [...new Set(rows.map(r => r[2] + " " + r[3]))];
for (const k of keys) {
  const by = {};
  for (const r of rows) if (r[2] + " " + r[3] === k) (by[r[1]] ??= {})[r[4]] = [Number(r[5]), Number(r[6])];
  const pp = [], tg = [];
  for (const v of Object.values(by)) if (v.old && v.new) { pp.push(v.new[0] / v.old[0]); tg.push(v.new[1] / v.old[1]); }
  console.log(k, "prefill", med(pp).toFixed(3), "decode", med(tg).toFixed(3), "(decode per round", tg.map(x => x.toFixed(2)).join(" ") + ")");
}' "$LOG"
rm -f "$LOG"
