// The console shell: navigation, the API key (kept in localStorage), the model list, and the pages.

import { render } from 'preact';
import { useCallback, useEffect, useState } from 'preact/hooks';
import { html } from './html.js';
import { apiKey, call, setApiKey } from './api.js';
import { ChatPage } from './chat.js';
import { ServerPage } from './server.js';
import { CompletionsPage, EmbeddingsPage } from './sandbox.js';

// `keep`: the page stays mounted while another is shown (rendering nothing), so what it holds survives a look at
// another page: a streaming answer keeps streaming into its chat, a typed prompt and its result stay. The server page
// is mounted only while shown (it polls the server every second).
const PAGES = [
  { id: 'chat', title: 'Chat', Page: ChatPage, keep: true },
  { id: 'server', title: 'Server', Page: ServerPage },
  { id: 'completions', title: 'Completions', Page: CompletionsPage, keep: true },
  { id: 'embeddings', title: 'Embeddings', Page: EmbeddingsPage, keep: true },
];

const pageFromHash = () => PAGES.find((p) => `#/${p.id}` === location.hash) ?? PAGES[0];

function KeyBox({ onChange }) {
  const [draft, setDraft] = useState(apiKey());
  const save = (e) => {
    e.preventDefault();
    setApiKey(draft.trim());
    onChange();
  };
  return html`<form class="keybox" onSubmit=${save}>
    <label for="api-key">API key</label>
    <input id="api-key" type="password" autocomplete="off" placeholder="--api-key (if set)" value=${draft} onInput=${(e) => setDraft(e.target.value)} />
    <button type="submit">Save</button>
  </form>`;
}

const MODELS_REFRESH_MS = 5000;

function App() {
  const [page, setPage] = useState(pageFromHash());
  const [models, setModels] = useState([]);
  const [error, setError] = useState(null);
  const [keyVersion, setKeyVersion] = useState(0);

  useEffect(() => {
    const onHash = () => setPage(pageFromHash());
    addEventListener('hashchange', onHash);
    return () => removeEventListener('hashchange', onHash);
  }, []);

  const loadModels = useCallback(async () => {
    try {
      const r = await call('/v1/models');
      const cards = r.data.map((m) => ({ id: m.id, embed: m.task === 'embed' })); // `task`: floe's extension
      setModels((old) => (JSON.stringify(old) === JSON.stringify(cards) ? old : cards));
      setError(null);
    } catch (e) {
      setError(e.message);
      // Still loading: /v1 answers 503 until the model is ready.
      if (e.status === 503) setTimeout(loadModels, 1000);
    }
  }, []);
  // Again every few seconds while the page is shown: a fine-tuning job's model or an adapter loaded at run time
  // appears in the pickers, an unloaded one goes, and the banner clears once a server that was down answers again.
  useEffect(() => {
    void loadModels();
    const t = setInterval(() => { if (document.visibilityState === 'visible') void loadModels(); }, MODELS_REFRESH_MS);
    return () => clearInterval(t);
  }, [keyVersion]);

  // Chat and completions list the generating models (base and adapters); an embedding model answers only
  // /v1/embeddings, whose page lists it first (the model a user means there), then the others, which it also takes.
  const generating = models.filter((m) => !m.embed).map((m) => m.id);
  const embedOnly = models.length > 0 && !generating.length;
  const embedFirst = [...models.filter((m) => m.embed).map((m) => m.id), ...generating];
  return html`
    <header class="top">
      <a class="brand" href="#/chat">floe</a>
      <nav aria-label="pages">
        ${PAGES.map((p) => html`<a href=${`#/${p.id}`} aria-current=${p === page ? 'page' : undefined}>${p.title}</a>`)}
      </nav>
      <${KeyBox} onChange=${() => setKeyVersion((v) => v + 1)} />
    </header>
    ${error && html`<div class="banner error" role="alert" id="global-error">${error}</div>`}
    <main>
      ${PAGES.filter((p) => p.keep || p === page).map(({ id, Page }) => html`<${Page} key=${id} shown=${id === page.id}
        models=${id === 'embeddings' ? embedFirst : generating} embedOnly=${embedOnly} keyVersion=${keyVersion} shellError=${error} />`)}
    </main>`;
}

render(html`<${App} />`, document.getElementById('app'));
