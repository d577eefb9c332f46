// Completions and embeddings sandboxes: a form, the response, and the same request as curl and `openai` (Node) code.

import { useEffect, useRef, useState } from 'preact/hooks';
import { html } from './html.js';
import { apiKey, call, origin } from './api.js';
import { given } from './chat.js';

/** The request as a curl command; the key comes from $FLOE_API_KEY so that it never lands in a pasted snippet. */
export function curlSnippet(path, body) {
  const json = JSON.stringify(body, null, 2).replaceAll("'", "'\\''");
  return [
    `curl ${origin()}${path} \\`,
    `  -H "Content-Type: application/json" \\`,
    ...(apiKey() ? [`  -H "Authorization: Bearer $FLOE_API_KEY" \\`] : []),
    `  -d '${json}'`,
  ].join('\n');
}

/** The request with the official `openai` package (npm install openai), as an ES module. */
export function nodeSnippet(method, body, print) {
  return [
    `import OpenAI from 'openai';`,
    ``,
    `const client = new OpenAI({`,
    `  baseURL: '${origin()}/v1',`,
    `  apiKey: process.env.FLOE_API_KEY ?? 'none',`,
    `});`,
    `const r = await client.${method}(${JSON.stringify(body, null, 2)});`,
    `console.log(${print});`,
  ].join('\n');
}

/**
 * Copy the snippet. The Clipboard API exists only in a secure context (https, or localhost): served on a LAN address
 * over http the page has none, so the snippet is selected and copied with the older execCommand('copy'), and when
 * even that fails it stays selected for Ctrl+C. Returns what to tell the user.
 */
async function copy(text, pre) {
  if (navigator.clipboard) {
    try {
      await navigator.clipboard.writeText(text);
      return 'Copied';
    } catch { /* refused (no permission): fall back below */ }
  }
  getSelection().selectAllChildren(pre);
  let ok = false;
  try { ok = document.execCommand('copy'); } catch { /* unsupported */ }
  if (ok) getSelection().removeAllRanges();
  return ok ? 'Copied' : 'This browser did not copy: the snippet is selected, press Ctrl+C';
}

function Snippets({ curl, node }) {
  const [tab, setTab] = useState('curl');
  const [copied, setCopied] = useState(null);
  const pre = useRef(null);
  const text = tab === 'curl' ? curl : node;
  useEffect(() => setCopied(null), [text]);
  return html`<div class="snippets">
    <div class="tabs" role="tablist">
      <button role="tab" aria-selected=${tab === 'curl'} onClick=${() => setTab('curl')}>curl</button>
      <button role="tab" aria-selected=${tab === 'node'} onClick=${() => setTab('node')}>Node (openai)</button>
      <button class="secondary copy" onClick=${async () => setCopied(await copy(text, pre.current))}>Copy</button>
      <span class="copied" role="status">${copied}</span>
    </div>
    <pre id=${`snippet-${tab}`} tabindex="0" ref=${pre}>${text}</pre>
    <p class="hint">${apiKey() ? html`Set <code>FLOE_API_KEY</code> to your key first.` : 'This server takes no key.'}</p>
  </div>`;
}

function ModelPicker({ models, model, set }) {
  return html`<label>Model<select name="model" value=${model} onChange=${(e) => set(e.target.value)}>
    ${models.map((id) => html`<option value=${id}>${id}</option>`)}
  </select></label>`;
}

const field = (label, name, value, set, attrs = {}) => html`<label>${label}<input name=${name} type="number" value=${value} ...${attrs} onInput=${(e) => set(e.target.value)} /></label>`;

export function CompletionsPage({ models, embedOnly, shown = true }) {
  const [prompt, setPrompt] = useState('The old man');
  const [maxTokens, setMaxTokens] = useState(32);
  const [temperature, setTemperature] = useState(0);
  const [seed, setSeed] = useState('');
  const [out, setOut] = useState(null);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const [picked, setPicked] = useState('');
  const model = models.includes(picked) ? picked : models[0] ?? '';
  const body = { model, prompt, ...given({ max_tokens: maxTokens, temperature, seed }, ['max_tokens', 'temperature', 'seed']) };
  const run = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      setOut(await call('/v1/completions', body));
    } catch (err) {
      setOut(null);
      setError(err.message);
    }
    setBusy(false);
  };
  if (!shown) return null;
  return html`<div class="sandbox">
    <form class="panel" onSubmit=${run}>
      <h2>Completions <small>POST /v1/completions</small></h2>
      ${embedOnly && html`<p class="error" id="no-completions-model">This server serves only embeddings (<code>--task embed</code>): no model here answers completions.</p>`}
      <${ModelPicker} models=${models} model=${model} set=${setPicked} />
      <label>Prompt<textarea name="prompt" rows="4" value=${prompt} onInput=${(e) => setPrompt(e.target.value)} /></label>
      <div class="row">
        ${field('Max tokens', 'max_tokens', maxTokens, setMaxTokens, { min: 1, placeholder: 'server default' })}
        ${field('Temperature', 'temperature', temperature, setTemperature, { min: 0, max: 2, step: 0.05, placeholder: 'server default' })}
        ${field('Seed', 'seed', seed, setSeed, { placeholder: 'random' })}
      </div>
      <button type="submit" disabled=${busy || !model}>${busy ? 'Running…' : 'Run'}</button>
      ${error && html`<div class="error" role="alert">${error}</div>`}
      ${out && html`<div class="result">
        <div class="completion"><span class="prompt-echo">${prompt}</span><span id="completion-text">${out.choices[0].text}</span></div>
        <div class="stats">${out.usage.prompt_tokens} prompt + ${out.usage.completion_tokens} completion tokens · finish: ${out.choices[0].finish_reason}</div>
        <details><summary>Response JSON</summary><pre id="response-json">${JSON.stringify(out, null, 2)}</pre></details>
      </div>`}
    </form>
    <${Snippets} curl=${curlSnippet('/v1/completions', body)} node=${nodeSnippet('completions.create', body, 'r.choices[0].text')} />
  </div>`;
}

export function EmbeddingsPage({ models, shown = true }) {
  const [input, setInput] = useState('The old man and the sea');
  const [out, setOut] = useState(null);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const [picked, setPicked] = useState('');
  const model = models.includes(picked) ? picked : models[0] ?? '';
  const body = { model, input, encoding_format: 'float' };
  const run = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      setOut(await call('/v1/embeddings', body));
    } catch (err) {
      setOut(null);
      setError(err.message);
    }
    setBusy(false);
  };
  const v = out?.data[0].embedding;
  const norm = v ? Math.hypot(...v) : 0;
  if (!shown) return null;
  return html`<div class="sandbox">
    <form class="panel" onSubmit=${run}>
      <h2>Embeddings <small>POST /v1/embeddings</small></h2>
      <${ModelPicker} models=${models} model=${model} set=${setPicked} />
      <label>Input<textarea name="input" rows="4" value=${input} onInput=${(e) => setInput(e.target.value)} /></label>
      <button type="submit" disabled=${busy || !model}>${busy ? 'Running…' : 'Run'}</button>
      ${error && html`<div class="error" role="alert">${error}</div>`}
      ${v && html`<div class="result">
        <div class="stats" id="embedding-summary">${v.length} dimensions · L2 norm ${norm.toFixed(4)} · ${out.usage.prompt_tokens} tokens</div>
        <pre class="vector">[${v.slice(0, 8).map((x) => x.toFixed(5)).join(', ')}${v.length > 8 ? ', …' : ''}]</pre>
      </div>`}
    </form>
    <${Snippets} curl=${curlSnippet('/v1/embeddings', body)} node=${nodeSnippet('embeddings.create', body, 'r.data[0].embedding.length')} />
  </div>`;
}
