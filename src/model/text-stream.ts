// TextStream: token ids → stable text with stop strings (detokenizer + stop matcher), as generate's TextSink.

import { type Decoder, IncrementalDetokenizer, StopStringMatcher } from '../formats/detokenize.js';
import type { TextSink } from './generate.js';

export class TextStream implements TextSink {
  private readonly detok: IncrementalDetokenizer;
  private readonly stops: StopStringMatcher;

  constructor(tokenizer: Decoder, stops: readonly string[] = [], opts: { skipSpecialTokens?: boolean; promptIds?: readonly number[] } = {}) {
    this.detok = new IncrementalDetokenizer(tokenizer, { skipSpecialTokens: opts.skipSpecialTokens ?? true, promptIds: opts.promptIds });
    this.stops = new StopStringMatcher(stops);
  }

  push(id: number, match = true): { text: string; stopped: boolean } {
    const r = this.stops.push(this.detok.push(id), match);
    return { text: r.text, stopped: r.stopped };
  }

  flush(): string {
    const r = this.stops.push(this.detok.flush());
    return r.stopped ? r.text : r.text + this.stops.flush();
  }
}
