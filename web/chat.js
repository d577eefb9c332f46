// Chat playground: streaming /v1/chat/completions, sampling settings, stop / regenerate / edit, logprobs, saved chats.

import { useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import { html } from './html.js';
import { stream } from './api.js';

const STORE = 'floe.chats';
const SETTINGS = 'floe.chatSettings';
const DEFAULTS = { model: '', system: '', temperature: 0.7, top_p: 1, top_k: -1, max_tokens: 256, seed: '', logprobs: false, top_logprobs: 5 };

// Request features of later issues (guardrails toggle, RAG collection picker) plug in here: each entry is
// { id, Control({ settings, set }), fields(settings) → extra request fields }. None exist yet, so no control shows.
const EXTENSIONS = [];

const load = (key, dflt) => {
  try {
    return { ...dflt, ...JSON.parse(localStorage.getItem(key) ?? 'null') };
  } catch {
    return { ...dflt };
  }
};
/**
 * Save the chats; when the browser's storage is full, again without the token log-probabilities (the bulk of a saved
 * answer with alternatives). Returns false when even that does not fit: the page then says chats are not saved.
 */
function saveChats(store) {
  try {
    localStorage.setItem(STORE, JSON.stringify(store));
    return true;
  } catch {
    try {
      const slim = { ...store, chats: store.chats.map((c) => ({ ...c, messages: c.messages.map((m) => m.logprobs?.length ? { ...m, logprobs: [] } : m) })) };
      localStorage.setItem(STORE, JSON.stringify(slim));
      return true;
    } catch {
      return false;
    }
  }
}

/** An answer saved without its stats was cut off by a reload or a closed tab while it streamed: say so on it. */
const interrupted = (st) => ({
  ...st,
  chats: st.chats.map((c) => ({
    ...c,
    messages: c.messages.map((m) => m.role === 'assistant' && !m.stats && !m.error ? { ...m, error: 'interrupted: the page was reloaded or closed before this answer finished' } : m),
  })),
});

const newChat = () => ({ id: `c${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`, title: 'New chat', updated: Date.now(), messages: [] });

/**
 * A turn the server refused, that failed before any text, or that the guard filtered (finish_reason content_filter):
 * shown in the chat, never sent again (the filtered prompt and the refusal text are not a conversation to continue).
 */
const failed = (m) => m?.role === 'assistant' && ((m.error && !m.content) || m.finish === 'content_filter');

/**
 * The number fields the user filled in; an empty one is left out of the request, so the server's default applies (the
 * model's generation_config), as when a client omits it: never 0, which would be greedy, or a 400 for top_p.
 */
export const given = (s, keys) => Object.fromEntries(keys.filter((k) => String(s[k] ?? '').trim() !== '').map((k) => [k, Number(s[k])]));

/**
 * The chat request for a history ending with the user's message. A failed turn (its user message and the empty
 * answer with an error) is left out: re-sent, a message too long for the context would fail every later turn.
 */
export function chatRequest(s, model, history) {
  const messages = [
    ...(s.system.trim() ? [{ role: 'system', content: s.system }] : []),
    ...history.filter((m, i) => !failed(m) && !(m.role === 'user' && failed(history[i + 1]))).map((m) => ({ role: m.role, content: m.content })),
  ];
  const body = {
    model, messages, stream: true, stream_options: { include_usage: true },
    ...given(s, ['temperature', 'top_p', 'top_k', 'max_tokens', 'seed']),
    return_token_ids: true, // floe extension: exact token counts even for a stopped answer (which gets no usage)
  };
  if (s.logprobs) Object.assign(body, { logprobs: true }, given(s, ['top_logprobs']));
  for (const x of EXTENSIONS) Object.assign(body, x.fields(s));
  return body;
}

const pct = (lp) => `${(100 * Math.exp(lp)).toFixed(1)}%`;
const shown = (t) => JSON.stringify(t).slice(1, -1);

function LogprobText({ entries }) {
  return html`<div class="lp-text">${entries.map((e) => {
    const p = Math.exp(e.logprob);
    const alts = (e.top_logprobs ?? []).map((a) => `${shown(a.token)}  ${pct(a.logprob)}`).join('\n');
    return html`<span class="lp-tok" style=${`background: hsl(${Math.round(120 * p)} 70% 82%)`}
      title=${`${shown(e.token)}  ${pct(e.logprob)}${alts ? `\nalternatives:\n${alts}` : ''}`} data-logprob=${e.logprob}>${e.token}</span>`;
  })}</div>`;
}

function Stats({ m }) {
  const s = m.stats;
  if (!s) return null;
  const parts = [];
  if (s.completionTokens !== null) parts.push(`${s.completionTokens} tokens`);
  if (s.tokensPerSecond !== null) parts.push(`${s.tokensPerSecond.toFixed(1)} tok/s`);
  if (s.ttftMs !== null) parts.push(`first token ${Math.round(s.ttftMs)} ms`);
  if (s.promptTokens !== null) parts.push(`prompt ${s.promptTokens} tokens${s.cachedTokens ? ` (${s.cachedTokens} cached)` : ''}`);
  if (m.finish) parts.push(`finish: ${m.finish}`);
  if (m.guard) parts.push(`guard: ${m.guard.flagged ? `unsafe${m.guard.categories?.length ? ` (${m.guard.categories.join(', ')})` : ''}` : 'safe'}, P(unsafe) ${Number(m.guard.unsafe_probability).toFixed(2)}`);
  if (m.stopped) parts.push('stopped');
  return html`<div class="stats">${parts.join(' · ')}</div>`;
}

function Message({ m, i, busy, last, showLp, onEdit, onRegenerate }) {
  const [editing, setEditing] = useState(null);
  if (m.role === 'user') {
    if (editing !== null) {
      const save = () => { onEdit(i, editing); setEditing(null); };
      return html`<div class="msg user editing">
        <textarea aria-label="edit message" value=${editing} onInput=${(e) => setEditing(e.target.value)}
          onKeyDown=${(e) => { if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); save(); } if (e.key === 'Escape') setEditing(null); }} />
        <div class="row"><button onClick=${save} disabled=${busy}>Save and send</button><button class="secondary" onClick=${() => setEditing(null)}>Cancel</button></div>
      </div>`;
    }
    return html`<div class="msg user"><div class="text">${m.content}</div>
      <button class="link" onClick=${() => setEditing(m.content)} disabled=${busy} aria-label=${`edit message ${i + 1}`}>Edit</button></div>`;
  }
  return html`<div class="msg assistant" aria-live=${last && busy ? 'polite' : undefined}>
    ${showLp && m.logprobs?.length ? html`<${LogprobText} entries=${m.logprobs} />` : html`<div class="text">${m.content}</div>`}
    ${m.error && html`<div class="error" role="alert">${m.error}</div>`}
    <${Stats} m=${m} />
    ${last && !busy && html`<button class="link" onClick=${onRegenerate}>Regenerate</button>`}
  </div>`;
}

function Settings({ s, set, models }) {
  const num = (k, label, attrs) => html`<label>${label}<input type="number" name=${k} placeholder="server default" value=${s[k]} ...${attrs} onInput=${(e) => set({ [k]: e.target.value })} /></label>`;
  return html`<details class="settings" open=${matchMedia('(min-width: 900px)').matches}>
    <summary>Settings</summary>
    <label>Model<select name="model" value=${s.model} onChange=${(e) => set({ model: e.target.value })}>
      ${models.map((id) => html`<option value=${id}>${id}</option>`)}
    </select></label>
    <label>System prompt<textarea name="system" rows="3" value=${s.system} onInput=${(e) => set({ system: e.target.value })} /></label>
    ${num('temperature', 'Temperature', { min: 0, max: 2, step: 0.05 })}
    ${num('top_p', 'Top p', { min: 0, max: 1, step: 0.05 })}
    ${num('top_k', 'Top k (-1 = all)', { min: -1, step: 1 })}
    ${num('max_tokens', 'Max tokens', { min: 1, step: 1 })}
    <label>Seed<input type="number" name="seed" placeholder="random" value=${s.seed} onInput=${(e) => set({ seed: e.target.value })} /></label>
    <label class="check"><input type="checkbox" name="logprobs" checked=${s.logprobs} onChange=${(e) => set({ logprobs: e.target.checked })} />Token log-probabilities</label>
    ${s.logprobs && num('top_logprobs', 'Alternatives per token', { min: 0, max: 20, step: 1 })}
    ${EXTENSIONS.map((x) => html`<${x.Control} key=${x.id} settings=${s} set=${set} />`)}
  </details>`;
}

export function ChatPage({ models, embedOnly, shown = true }) {
  const [store, setStore] = useState(() => {
    const st = load(STORE, { chats: [], current: null });
    if (!st.chats.length) st.chats = [newChat()];
    if (!st.chats.some((c) => c.id === st.current)) st.current = st.chats[0].id;
    return interrupted(st);
  });
  const [settings, setSettings] = useState(() => load(SETTINGS, DEFAULTS));
  const [draft, setDraft] = useState('');
  const [busy, setBusy] = useState(false);
  const [showLp, setShowLp] = useState(true);
  const abortRef = useRef(null);
  const storeRef = useRef(store);
  storeRef.current = store;
  const listRef = useRef(null);

  // Saved in the commit (a layout effect), not after the next paint: a plain effect waits for an animation frame, and a
  // reload or a closed tab right after a click (delete, new chat) would lose the change.
  const [saved, setSaved] = useState(true);
  const adopted = useRef(null);
  useLayoutEffect(() => { if (store !== adopted.current) setSaved(saveChats(store)); }, [store]);
  // Another tab saved its chats: take them (keeping this tab's open chat), or this tab's next save would write back its
  // older copy over them, losing that tab's conversation. What was adopted is not saved again, so tabs do not echo.
  useEffect(() => {
    const onStorage = (e) => {
      if (e.key !== STORE || e.storageArea !== localStorage || e.newValue === null) return;
      let st;
      try { st = JSON.parse(e.newValue); } catch { return; }
      if (!Array.isArray(st?.chats) || !st.chats.length) return;
      const mine = storeRef.current.current;
      adopted.current = { chats: st.chats, current: st.chats.some((c) => c.id === mine) ? mine : st.chats[0].id };
      setStore(adopted.current);
    };
    addEventListener('storage', onStorage);
    return () => removeEventListener('storage', onStorage);
  }, []);
  useLayoutEffect(() => { try { localStorage.setItem(SETTINGS, JSON.stringify(settings)); } catch { /* full: the chats' banner says so */ } }, [settings]);
  // Follow the newest text only while the list is scrolled to its end: a user who scrolls up to read during a long
  // answer stays where they are (sending, or opening a chat, follows again).
  // Whether it was at the end is read against the height it had after the last render, before the new text.
  const stick = useRef(true);
  const height = useRef(0);
  useLayoutEffect(() => { stick.current = true; }, [store.current, shown]);
  useEffect(() => {
    const el = listRef.current;
    if (!el) return;
    if (stick.current || el.scrollTop + el.clientHeight >= height.current - 32) el.scrollTop = el.scrollHeight;
    stick.current = false;
    height.current = el.scrollHeight;
  });
  // Esc stops the answer while the chat is shown (not one streaming behind another page).
  const shownRef = useRef(shown);
  shownRef.current = shown;
  useEffect(() => {
    const onKey = (e) => { if (e.key === 'Escape' && shownRef.current && abortRef.current) abortRef.current.abort(); };
    addEventListener('keydown', onKey);
    return () => removeEventListener('keydown', onKey);
  }, []);

  const chat = store.chats.find((c) => c.id === store.current);
  const model = models.includes(settings.model) ? settings.model : models[0] ?? '';
  const setMessages = (id, messages) => setStore((st) => ({
    ...st,
    chats: st.chats.map((c) => c.id !== id ? c : {
      ...c, messages, updated: Date.now(),
      // by code points: 40 UTF-16 units can end inside an emoji's surrogate pair, which shows as U+FFFD
      title: c.title === 'New chat' && messages[0] ? Array.from(messages[0].content).slice(0, 40).join('') || 'New chat' : c.title,
    }),
  }));

  /** Stream an answer to `history` (ending with a user message) into conversation `id`. */
  const generate = async (id, history) => {
    const ac = new AbortController();
    abortRef.current = ac;
    stick.current = true;
    setBusy(true);
    let msg = { role: 'assistant', content: '', logprobs: [], finish: null, stopped: false, error: null, stats: null };
    setMessages(id, [...history, msg]);
    const t0 = performance.now();
    let tFirst = null;
    let usage = null;
    let counted = 0;
    let firstCounted = 0; // tokens that came with the first text: a guarded stream releases them in windows
    try {
      await stream('/v1/chat/completions', chatRequest(settings, model, history), (chunk) => {
        if (chunk.usage) usage = chunk.usage;
        if (chunk.guardrails) msg = { ...msg, guard: chunk.guardrails }; // the guard's verdict, on the last chunk
        const ch = chunk.choices?.[0];
        if (!ch) return;
        counted += ch.token_ids?.length ?? 0;
        const piece = ch.delta?.content ?? '';
        if (piece && tFirst === null) { tFirst = performance.now(); firstCounted = counted; }
        msg = {
          ...msg, content: msg.content + piece, finish: ch.finish_reason ?? msg.finish,
          logprobs: ch.logprobs?.content ? [...msg.logprobs, ...ch.logprobs.content] : msg.logprobs,
        };
        setMessages(id, [...history, msg]);
      }, ac.signal);
    } catch (e) {
      if (e.name === 'AbortError') msg = { ...msg, stopped: true };
      else msg = { ...msg, error: e.message };
    }
    const t1 = performance.now();
    const n = usage?.completion_tokens ?? (counted || null);
    msg = {
      ...msg,
      stats: {
        completionTokens: n, promptTokens: usage?.prompt_tokens ?? null, cachedTokens: usage?.prompt_tokens_details?.cached_tokens ?? 0,
        ttftMs: tFirst === null ? null : tFirst - t0,
        // Decode speed: the tokens that came after the first text over the time after it (none measured when the
        // whole answer came at once, as a guarded answer shorter than --guard-window does).
        tokensPerSecond: n !== null && tFirst !== null && t1 > tFirst && n > Math.max(1, firstCounted) ? (n - Math.max(1, firstCounted)) / ((t1 - tFirst) / 1000) : null,
      },
    };
    setMessages(id, [...history, msg]);
    abortRef.current = null;
    setBusy(false);
  };

  const send = () => {
    if (busy || !draft.trim() || !chat) return;
    const history = [...chat.messages, { role: 'user', content: draft }];
    setDraft('');
    void generate(chat.id, history);
  };
  const edit = (i, content) => void generate(chat.id, [...chat.messages.slice(0, i), { role: 'user', content }]);
  const regenerate = () => {
    const k = chat.messages.findLastIndex((m) => m.role === 'user');
    if (k >= 0) void generate(chat.id, chat.messages.slice(0, k + 1));
  };
  const add = () => {
    const c = newChat();
    setStore((st) => ({ chats: [c, ...st.chats], current: c.id }));
  };
  const remove = (id) => setStore((st) => {
    const chats = st.chats.filter((c) => c.id !== id);
    if (!chats.length) chats.push(newChat());
    return { chats, current: st.current === id ? chats[0].id : st.current };
  });

  if (!shown) return null;
  return html`<div class="chat-page">
    <aside class="chats" aria-label="conversations">
      <button onClick=${add} disabled=${busy}>New chat</button>
      <ul>${store.chats.map((c) => html`<li key=${c.id} class=${c.id === store.current ? 'current' : ''}>
        <button class="link title" disabled=${busy} onClick=${() => setStore((st) => ({ ...st, current: c.id }))} aria-current=${c.id === store.current ? 'true' : undefined}>${c.title}</button>
        <button class="link delete" disabled=${busy} onClick=${() => remove(c.id)} aria-label=${`delete chat ${c.title}`}>×</button>
      </li>`)}</ul>
    </aside>
    <section class="conversation">
      <div class="messages" ref=${listRef}>
        ${chat?.messages.length ? chat.messages.map((m, i) => html`<${Message} key=${i} m=${m} i=${i} busy=${busy} showLp=${showLp}
          last=${i === chat.messages.length - 1 && m.role === 'assistant'} onEdit=${edit} onRegenerate=${regenerate} />`)
          : embedOnly ? html`<p class="empty" id="no-chat-model">This server serves only embeddings (<code>--task embed</code>): try the <a href="#/embeddings">Embeddings</a> page.</p>`
          : html`<p class="empty">Talk to <b>${model || 'the model'}</b>. Enter sends, Shift+Enter starts a new line, Esc stops.</p>`}
      </div>
      ${!saved && html`<div class="error" role="alert" id="not-saved">This browser's storage is full: chats are no longer saved. Delete old chats to save again.</div>`}
      <form class="composer" onSubmit=${(e) => { e.preventDefault(); send(); }}>
        <textarea id="prompt" aria-label="message" rows="2" placeholder="Message (Enter to send, Shift+Enter for a new line)" value=${draft}
          onInput=${(e) => setDraft(e.target.value)}
          onKeyDown=${(e) => { if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); send(); } }} />
        ${busy
          ? html`<button type="button" id="stop" onClick=${() => abortRef.current?.abort()}>Stop</button>`
          : html`<button type="submit" id="send" disabled=${!draft.trim() || !model}>Send</button>`}
      </form>
      ${settings.logprobs && html`<label class="check lp-toggle"><input type="checkbox" checked=${showLp} onChange=${(e) => setShowLp(e.target.checked)} />Colour tokens by probability (hover for alternatives)</label>`}
    </section>
    <${Settings} s=${{ ...settings, model }} set=${(p) => setSettings((s) => ({ ...s, ...p }))} models=${models} />
  </div>`;
}
