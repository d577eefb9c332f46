// Chunking properties on random texts, counted by the built-in model's real tokenizer: no chunk over the limit,
// consecutive chunks overlap by at most the overlap (and never leave a gap), offsets give back the exact text.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chunkText } from '../../src/platform/rag/chunk.js';
import { extractDocument, sourceSpan } from '../../src/platform/rag/extract.js';
import { prepareDocuments } from '../../src/platform/rag/prepare.js';
import { brownTokenizer, randomText, rng } from './rag-helpers.js';

test('chunkText: random texts, several sizes: limit, overlap, coverage and exact offsets', async () => {
  const tok = await brownTokenizer();
  const count = (t: string) => tok.encode(t).length; // BOS included, as the embedder feeds it
  const base = count('');
  const seed = process.env.FLOE_SEED !== undefined ? Number(process.env.FLOE_SEED) >>> 0 : (Date.now() ^ 0x5eed) >>> 0;
  const r = rng(seed);
  for (let trial = 0; trial < 12; trial++) {
    const text = randomText(r, 1 + Math.floor(r() * 12));
    const maxTokens = 16 + Math.floor(r() * 112);
    const overlap = Math.floor(r() * (maxTokens - base) * 0.5);
    const chunks = chunkText(text, { maxTokens, overlap, countTokens: count });
    const at = `seed ${seed} trial ${trial} (max ${maxTokens}, overlap ${overlap})`;
    assert.ok(chunks.length >= 1, at);
    let covered = 0; // text before this offset is covered by chunks
    for (const [i, c] of chunks.entries()) {
      assert.equal(c.text, text.slice(c.start, c.end), `${at}: chunk ${i} offsets`);
      assert.equal(c.tokens, count(c.text), `${at}: chunk ${i} token count`);
      assert.ok(c.tokens <= maxTokens, `${at}: chunk ${i} has ${c.tokens} tokens > ${maxTokens}`);
      assert.equal(c.text, c.text.trim(), `${at}: chunk ${i} is trimmed`);
      assert.equal(text.slice(covered, c.start).trim(), '', `${at}: gap of text before chunk ${i}`);
      if (i > 0) {
        const prev = chunks[i - 1]!;
        assert.ok(c.start > prev.start, `${at}: chunk ${i} does not advance`);
        if (c.start < prev.end) {
          const shared = count(text.slice(c.start, prev.end)) - base;
          assert.ok(shared <= overlap, `${at}: chunks ${i - 1},${i} share ${shared} tokens > ${overlap}`);
        }
      }
      covered = Math.max(covered, c.end);
    }
    assert.equal(text.slice(covered).trim(), '', `${at}: text after the last chunk`);
  }
});

test('chunkText: overlap is used when sentences allow it, and chunks end at paragraph ends when they can', async () => {
  const tok = await brownTokenizer();
  const count = (t: string) => tok.encode(t).length;
  const sent = (i: number) => `Sentence number ${i} tells of the old man and the sea.`;
  const text = Array.from({ length: 40 }, (_, i) => sent(i)).join(' ');
  const chunks = chunkText(text, { maxTokens: 64, overlap: 20, countTokens: count });
  assert.ok(chunks.length > 3);
  for (let i = 1; i < chunks.length; i++) assert.ok(chunks[i]!.start < chunks[i - 1]!.end, `chunks ${i - 1} and ${i} overlap`);
  const noOverlap = chunkText(text, { maxTokens: 64, overlap: 0, countTokens: count });
  for (let i = 1; i < noOverlap.length; i++) assert.ok(noOverlap[i]!.start >= noOverlap[i - 1]!.end);
  // a short paragraph then a long one, with room for two more sentences: the first chunk stops at the paragraph end
  const p1 = `${sent(1)} ${sent(2)} ${sent(3)}`;
  const paras = `${p1}\n\n${Array.from({ length: 10 }, (_, i) => sent(10 + i)).join(' ')}`;
  const limit = count(p1) + count(`${sent(10)} ${sent(11)}`);
  const pc = chunkText(paras, { maxTokens: limit, overlap: 0, countTokens: count });
  assert.equal(pc[0]!.text, p1);
  assert.ok(pc[1]!.text.startsWith(sent(10)) && pc[1]!.tokens > count(p1), pc[1]!.text);
  assert.throws(() => chunkText('x', { maxTokens: 1, overlap: 0, countTokens: count }), /leaves no room/);
  assert.throws(() => chunkText('x', { maxTokens: 10, overlap: 10, countTokens: count }), /overlap must be/);
});

// V8's Intl.Segmenter slows down faster than linearly on long strings: a 200 KB line of words took 16 s to split
// into words, a 540 KB paragraph 10 s into sentences, so one such document held an ingest (and the server's write
// queue) for minutes. Segmented in bounded windows, each takes 2-3 s here (mostly token counting). The bound is on this
// process's CPU time, not the wall clock: beside other suites on a 2-core host the same work took 6.4 s of wall time.
test('chunkText: a 200 KB sentence and a 540 KB paragraph chunk in seconds, every chunk within the limit', { timeout: 40_000 }, async () => {
  const tok = await brownTokenizer();
  const count = (t: string) => tok.encode(t).length;
  const words = Array.from({ length: 40_000 }, (_, i) => `w${i % 997}`).join(' ');
  const lines = Array.from({ length: 20_000 }, (_, i) => `Line ${i} says the pump ran.`).join(' ');
  for (const text of [words, lines]) {
    const cpu0 = process.cpuUsage();
    const chunks = chunkText(text, { maxTokens: 256, overlap: 32, countTokens: count });
    const cpu = process.cpuUsage(cpu0);
    const ms = (cpu.user + cpu.system) / 1000;
    assert.ok(ms < 10_000, `${text.length} characters took ${ms.toFixed(0)} ms of CPU time`);
    let covered = 0;
    for (const c of chunks) {
      assert.ok(c.tokens <= 256 && c.text === text.slice(c.start, c.end));
      assert.equal(text.slice(covered, c.start).trim(), '', `gap before ${c.start}`);
      assert.ok(c.start === 0 || /\s/.test(text[c.start - 1]!), `chunk at ${c.start} starts inside a word`);
      covered = Math.max(covered, c.end);
    }
    assert.equal(covered, text.length);
  }
});

test('extractDocument: Markdown and HTML text with source spans that contain each chunk', () => {
  const md = '# The Title\n\nSome *emphasis* and `code` with an \\* escape.\n\n- first item\n- second item\n\n```js\nlet a = 1;\n```\n';
  const m = extractDocument('doc.md', md);
  assert.equal(m.text, 'The Title\n\nSome emphasis and code with an * escape.\n\nfirst item\n\nsecond item\n\nlet a = 1;');
  const html = '<html><head><title>T &amp; t</title><style>p{}</style><script>var x = 1</script></head>' +
    '<body><h1>Hello   world</h1><p>A &lt;b&gt; para with <b>bold</b> text.</p><pre>  code\n  here</pre></body></html>';
  const h = extractDocument('page.html', html);
  assert.equal(h.text, 'T & t\n\nHello world\n\nA <b> para with bold text.\n\n  code\n  here');
  // every verbatim piece's text is exactly its source slice; a span covers the words of the text it maps
  for (const d of [m, h]) for (const p of d.pieces) if (p.verbatim) assert.equal(p.text, (d === m ? md : html).slice(p.srcStart, p.srcEnd));
  const s = sourceSpan(h, h.text.indexOf('para'), h.text.indexOf('text.') + 5);
  assert.equal(html.slice(s.start, s.end), 'para with <b>bold</b> text.');
  assert.throws(() => extractDocument('x.pdf', 'abc'), /unsupported file type '.pdf'/);
  assert.throws(() => extractDocument('x.md', '  \n\n '), /x.md: the document is empty/);
  assert.throws(() => extractDocument('x.html', '<p> </p><script>only code</script>'), /empty/);
});

// Raw HTML in Markdown (a README's centred tagline, <details>/<summary>, <kbd>) lost its text, a document of only such
// HTML was refused as empty, and each inline tag broke its sentence into paragraphs ("Press \n\nCtrl\n\n+ …").
test('extractDocument: the text of HTML inside Markdown is kept, inline tags do not break the line, comments stay out', () => {
  const md = '# Tool\n\n<p align="center">The fastest <b>zebra</b> parser</p>\n\nPress <kbd>Ctrl</kbd>+<kbd>C</kbd> to copy.\n\n' +
    '<details><summary>Advanced flags</summary>\n\nUse `--turbo` for speed.\n\n</details>\n\n<!-- hidden note -->\n';
  const d = extractDocument('readme.md', md);
  assert.equal(d.text, 'Tool\n\nThe fastest zebra parser\n\nPress Ctrl+C to copy.\n\nAdvanced flags\n\nUse --turbo for speed.');
  const s = sourceSpan(d, d.text.indexOf('The fastest'), d.text.indexOf(' parser') + 7);
  assert.ok(md.slice(s.start, s.end).includes('The fastest <b>zebra</b> parser'), md.slice(s.start, s.end));
  for (const p of d.pieces) if (p.verbatim) assert.equal(p.text, md.slice(p.srcStart, p.srcEnd));
  assert.equal(extractDocument('only.md', '<p>content of the page</p>\n').text, 'content of the page');
});

// A chunk's [start, end) must let a user slice the original file for the chunk's source: a chunk opening with a
// heading, list item, quote, code fence, emphasis or link starts at its markup ('#', '-', '>', '```', '*', '['), one
// closing with such an element ends after its markup ('**', '(url)', the closing fence); inside text, at the character.
// Before, a chunk opening with a heading started at the heading's text, after the '#' (README said the markup).
test('Markdown chunk offsets: fresh random documents, each chunk\'s [start, end) as the document was written', async () => {
  const tok = await brownTokenizer();
  const count = (t: string) => tok.encode(t).length;
  const base = count('');
  const seed = process.env.FLOE_SEED !== undefined ? Number(process.env.FLOE_SEED) >>> 0 : (Date.now() ^ 0x3d) >>> 0;
  const r = rng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const WORDS = 'river stone light north quiet garden winter paper signal harbor lantern orchard copper meadow valley engine'.split(' ');
  for (let trial = 0; trial < 10; trial++) {
    // the document, written with what each text character's source offset is and where each element's markup lies
    let md = '', text = '';
    const srcOf: number[] = []; // per character of the extracted text (-1: a separator between blocks)
    const elements: Array<{ tStart: number; tEnd: number; sStart: number; sEnd: number }> = [];
    const markup = (m: string) => { md += m; };
    const words = (n: number) => Array.from({ length: n }, () => pick(WORDS));
    const plain = (t: string) => { for (const ch of t) { srcOf.push(md.length); text += ch; md += ch; } };
    /** One inline run: text, or text wrapped in emphasis, strong, code or a link. */
    const inline = (t: string) => {
      const kind = r() < 0.6 ? 'plain' : pick(['em', 'strong', 'code', 'link'] as const);
      if (kind === 'plain') return plain(t);
      const sStart = md.length, tStart = text.length;
      markup(kind === 'em' ? '*' : kind === 'strong' ? '**' : kind === 'code' ? '`' : '[');
      plain(t);
      markup(kind === 'em' ? '*' : kind === 'strong' ? '**' : kind === 'code' ? '`' : '](https://example.com/p)');
      elements.push({ tStart, tEnd: text.length, sStart, sEnd: md.length });
    };
    /** Sentences of words; a wrapped run may hold the sentence's first or last words (its period too). */
    const sentences = (n: number) => {
      for (let i = 0; i < n; i++) {
        if (i > 0) plain(' ');
        const ws = words(2 + Math.floor(r() * 10));
        ws[0] = ws[0]![0]!.toUpperCase() + ws[0]!.slice(1);
        ws[ws.length - 1] += '.';
        for (let j = 0; j < ws.length;) {
          const len = Math.min(ws.length - j, 1 + Math.floor(r() * 3));
          if (j > 0) plain(' ');
          inline(ws.slice(j, j + len).join(' '));
          j += len;
        }
      }
    };
    const block = (write: () => void) => {
      if (md.length) { markup('\n\n'); text += '\n\n'; srcOf.push(-1, -1); }
      const sStart = md.length, tStart = text.length;
      write();
      elements.push({ tStart, tEnd: text.length, sStart, sEnd: md.length });
    };
    const heading = () => block(() => { markup('#'.repeat(1 + Math.floor(r() * 3)) + ' '); for (const [i, w] of words(1 + Math.floor(r() * 5)).entries()) { if (i) plain(' '); inline(w); } });
    heading(); // every document opens with one: its first chunk starts at the '#'
    for (let n = 2 + Math.floor(r() * 10); n > 0; n--) {
      const kind = pick(['heading', 'paragraph', 'paragraph', 'list', 'quote', 'code'] as const);
      if (kind === 'heading') heading();
      else if (kind === 'paragraph') block(() => sentences(1 + Math.floor(r() * 6)));
      else if (kind === 'quote') block(() => { markup('> '); sentences(1 + Math.floor(r() * 3)); });
      else if (kind === 'code') block(() => { markup('```\n'); plain(words(2 + Math.floor(r() * 8)).join(' ')); markup('\n```'); });
      else {
        for (let i = 1 + Math.floor(r() * 3); i > 0; i--) block(() => { markup('- '); sentences(1 + Math.floor(r() * 2)); });
        block(() => sentences(1)); // a paragraph between lists (two lists in a row would be one)
      }
    }
    md += '\n';
    const maxTokens = 12 + Math.floor(r() * 40);
    const overlap = Math.floor(r() * (maxTokens - base) * 0.5);
    const at = `seed ${seed} trial ${trial} (max ${maxTokens}, overlap ${overlap})`;
    assert.equal(extractDocument('doc.md', md).text, text, `${at}: the extracted text is the written one`);
    const chunks = chunkText(text, { maxTokens, overlap, countTokens: count });
    const [doc] = prepareDocuments([{ source: 'doc.md', content: md }], { chunkTokens: maxTokens, overlap }, count);
    assert.equal(doc!.chunks.length, chunks.length, at);
    let extended = 0;
    for (const [i, c] of chunks.entries()) {
      // the outermost element whose text the chunk starts (ends) with gives its markup; else the character itself
      const opens = elements.filter((e) => e.tStart === c.start), closes = elements.filter((e) => e.tEnd === c.end);
      const start = opens.length ? Math.min(...opens.map((e) => e.sStart)) : srcOf[c.start]!;
      const end = closes.length ? Math.max(...closes.map((e) => e.sEnd)) : srcOf[c.end - 1]! + 1;
      if (start !== srcOf[c.start] || end !== srcOf[c.end - 1]! + 1) extended++;
      const got = doc!.chunks[i]!;
      assert.equal(got.text, c.text, `${at}: chunk ${i}`);
      assert.deepEqual([got.start, got.end], [start, end],
        `${at}: chunk ${i}: md.slice(start, end) is ${JSON.stringify(md.slice(got.start, got.end))}, expected ${JSON.stringify(md.slice(start, end))}`);
    }
    assert.ok(extended >= 1, `${at}: some chunk starts or ends with markup`);
  }
});
