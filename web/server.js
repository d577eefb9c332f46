// Server page: live uPlot charts from the engine's metrics (/v1/floe/stats) and the model and memory facts (/v1/floe/info).

import { useEffect, useRef, useState } from 'preact/hooks';
import uPlot from 'uplot';
import { html } from './html.js';
import { call } from './api.js';
import { buckets, quantile, scalar } from './metrics.js';

const POLL_MS = 1000;
const KEEP = 300; // samples (5 minutes at 1 s)
const WINDOW_S = 10; // latency percentiles over the last 10 s

const COLORS = ['#1f6feb', '#d97706', '#16a34a', '#dc2626', '#7c3aed'];

/** Each chart: its series and how to compute one point from the current sample and the ones before it. */
const CHARTS = [
  {
    id: 'throughput', title: 'Tokens / s', series: ['generated', 'prompt'],
    point: (cur, prev) => prev ? [
      rate(cur, prev, 'floe_engine_generation_tokens_total'), rate(cur, prev, 'floe_engine_prompt_tokens_total'),
    ] : [null, null],
  },
  { id: 'requests', title: 'Requests', series: ['running', 'waiting'], point: (cur) => [scalar(cur.metrics, 'floe_num_requests_running'), scalar(cur.metrics, 'floe_num_requests_waiting')] },
  { id: 'ttft', title: `Time to first token, ms (last ${WINDOW_S} s)`, series: ['p50', 'p90', 'p99'], point: (cur, _p, old) => pcts(cur, old, 'floe_time_to_first_token_seconds') },
  { id: 'itl', title: `Inter-token latency, ms (last ${WINDOW_S} s)`, series: ['p50', 'p90', 'p99'], point: (cur, _p, old) => pcts(cur, old, 'floe_inter_token_latency_seconds') },
  { id: 'kv', title: 'KV cache blocks', series: ['used', 'cached', 'total'], point: (cur) => ['floe_kv_blocks_used', 'floe_kv_blocks_cached', 'floe_kv_blocks_total'].map((n) => scalar(cur.metrics, n)) },
  {
    id: 'prefix', title: `Prefix-cache hit rate, % (last ${WINDOW_S} s)`, series: ['hit rate'],
    point: (cur, _p, old) => {
      const q = delta(cur, old, 'floe_prefix_cache_queries_total');
      const hits = delta(cur, old, 'floe_prefix_cache_hits_total');
      return [q && hits !== null ? (100 * hits) / q : null];
    },
  },
  { id: 'preemptions', title: 'Preemptions (total)', series: ['preemptions'], point: (cur) => [scalar(cur.metrics, 'floe_num_preemptions_total') ?? 0] },
];

/** How much a counter grew since `old`; null when unknown: no sample yet, or it went down (the server restarted). */
function delta(cur, old, name) {
  if (!old) return null;
  const d = (scalar(cur.metrics, name) ?? 0) - (scalar(old.metrics, name) ?? 0);
  return d < 0 ? null : d;
}
function rate(cur, prev, name) {
  const dt = cur.time - prev.time;
  const d = delta(cur, prev, name);
  return dt > 0 && d !== null ? d / dt : null;
}
function pcts(cur, old, name) {
  if (!old) return [null, null, null];
  const now = buckets(cur.metrics, name);
  const before = buckets(old.metrics, name);
  return [0.5, 0.9, 0.99].map((q) => {
    const v = quantile(q, now, before);
    return v === null ? null : v * 1000;
  });
}

function Chart({ spec, data }) {
  const el = useRef(null);
  const plot = useRef(null);
  useEffect(() => {
    const node = el.current;
    const css = getComputedStyle(document.documentElement);
    const axis = { stroke: css.getPropertyValue('--muted').trim(), grid: { stroke: css.getPropertyValue('--line').trim() }, ticks: { stroke: css.getPropertyValue('--line').trim() } };
    const opts = {
      width: node.clientWidth || 300, height: 160,
      series: [{}, ...spec.series.map((label, i) => ({ label, stroke: COLORS[i], width: 2, spanGaps: false }))],
      axes: [{ ...axis, values: (_u, ticks) => ticks.map(clock), space: 70, incrs: [1, 2, 5, 10, 15, 30, 60, 120, 300] }, { ...axis, size: 50 }],
      scales: { y: { range: (_u, min, max) => [Math.min(0, min ?? 0), Math.max(1, max ?? 1) * 1.1] } },
      legend: { live: false },
    };
    const u = new uPlot(opts, data, node);
    plot.current = u;
    node.uplot = u; // what is plotted, readable by tests
    const ro = new ResizeObserver(() => { if (node.clientWidth > 0) u.setSize({ width: node.clientWidth, height: 160 }); });
    ro.observe(node);
    return () => { ro.disconnect(); u.destroy(); plot.current = null; };
  }, []);
  useEffect(() => { plot.current?.setData(data); }, [data]);
  return html`<figure class="chart"><figcaption>${spec.title}</figcaption><div data-chart=${spec.id} ref=${el} /></figure>`;
}

const clock = (t) => new Date(t * 1000).toLocaleTimeString([], { hour12: false });
const bytes = (b) => b === null || b === undefined ? '—' : b >= 2 ** 30 ? `${(b / 2 ** 30).toFixed(2)} GiB` : `${(b / 2 ** 20).toFixed(1)} MiB`;

function Facts({ info }) {
  if (!info) return null;
  const m = info.model ?? {};
  const c = m.config;
  const e = info.engine;
  const kv = info.kv_cache;
  const rows = [
    ['model', `${info.model_name}${m.path ? ` (${m.path}, ${m.format})` : ''}`],
    c && ['architecture', `llama: ${c.layers} layers, hidden ${c.hidden_size}, ffn ${c.intermediate_size}, heads ${c.heads} (kv ${c.kv_heads}), head dim ${c.head_dim}`],
    c && ['vocab', `${c.vocab_size}${c.tied_embeddings ? ' (tied embeddings)' : ''}`],
    c && ['rope', `theta ${c.rope_theta}${c.rope_scaling ? `, ${c.rope_scaling} scaling` : ''}`],
    ['context', `${e.maxModelLen} tokens; longest request ${e.maxRequestTokens} tokens`],
    m.parameters !== undefined && ['parameters', `${m.parameters.toLocaleString('en-US')} (${(m.parameters / 1e9).toFixed(3)} B)`],
    m.dtypes && ['dtypes', Object.entries(m.dtypes).map(([d, n]) => `${d} ${((100 * n) / m.parameters).toFixed(1)}%`).join(', ')],
    m.weight_bytes !== undefined && ['weights', bytes(m.weight_bytes)],
    m.file_bytes !== undefined && ['file', bytes(m.file_bytes)],
    ['kv cache', `${kv.dtype}: ${kv.blocks} blocks × ${kv.block_size} = ${kv.tokens} tokens${kv.bytes !== null ? `, ${bytes(kv.bytes)} (${(kv.bytes_per_token / 1024).toFixed(1)} KiB per token)` : ''}`],
    ['server memory', `RSS ${bytes(info.memory.rss_bytes)}, JS heap ${bytes(info.memory.heap_used_bytes)}`],
    ['host memory', `${bytes(info.memory.system_free_bytes)} free of ${bytes(info.memory.system_total_bytes)}`],
    ['process', `node ${info.process.node}, pid ${info.process.pid}, up ${Math.round(info.process.uptime_s)} s`],
  ].filter(Boolean);
  return html`<table class="facts" id="facts"><tbody>${rows.map(([k, v]) => html`<tr><th scope="row">${k}</th><td>${v}</td></tr>`)}</tbody></table>`;
}

export function ServerPage({ keyVersion, shellError }) {
  const [samples, setSamples] = useState([]);
  const [info, setInfo] = useState(null);
  const [error, setError] = useState(null);
  const rows = useRef([]); // [{ time, metrics, points: { chartId: [values] } }]

  useEffect(() => {
    let stop = false;
    let timer = null;
    let n = 0;
    const tick = async () => {
      try {
        const cur = await call('/v1/floe/stats');
        const all = rows.current;
        // A restarted server counts from 0 again: rates and windows compare only samples of the same process (a
        // window reaching into the old one made up a prefix-cache hit rate from two processes' counters).
        cur.started = scalar(cur.metrics, 'floe_process_start_time_seconds');
        const same = all.filter((r) => r.started === cur.started);
        const prev = same[same.length - 1];
        const old = same.findLast((r) => r.time <= cur.time - WINDOW_S) ?? same[0];
        cur.points = Object.fromEntries(CHARTS.map((c) => [c.id, c.point(cur, prev, old)]));
        rows.current = [...all.slice(-KEEP + 1), cur];
        if (!stop) { setSamples(rows.current); setError(null); }
        if (n++ % 5 === 0) setInfo(await call('/v1/floe/info')); // memory moves slowly
      } catch (e) {
        if (!stop) setError(e.message);
      }
      if (!stop) timer = setTimeout(tick, POLL_MS);
    };
    void tick();
    return () => { stop = true; clearTimeout(timer); };
  }, [keyVersion]);

  const last = samples[samples.length - 1];
  const time = samples.map((s) => s.time);
  const tiles = last ? [
    ['generated tok/s', last.points.throughput[0]?.toFixed(1) ?? '—'],
    ['running', last.points.requests[0] ?? '—'],
    ['waiting', last.points.requests[1] ?? '—'],
    ['KV blocks used', `${last.points.kv[0]} / ${last.points.kv[2]}`],
    ['prefix hit rate', last.points.prefix[0] === null ? '—' : `${last.points.prefix[0].toFixed(0)}%`],
    ['preemptions', last.points.preemptions[0]],
  ] : [];
  // An error every route answers (a wrong key, the model loading, the server gone) is in the shell's banner already
  // (its /v1/models poll): shown there once, not again here; an error of this page's own routes shows here.
  return html`<div class="server-page">
    ${error && error !== shellError && html`<div class="banner error" role="alert">${error}</div>`}
    <div class="tiles">${tiles.map(([k, v]) => html`<div class="tile"><div class="v">${v}</div><div class="k">${k}</div></div>`)}</div>
    <div class="charts">${CHARTS.map((spec) => html`<${Chart} key=${spec.id} spec=${spec}
      data=${[time, ...spec.series.map((_, i) => samples.map((s) => s.points[spec.id][i]))]} />`)}</div>
    <h2>Model and memory</h2>
    <${Facts} info=${info} />
  </div>`;
}
