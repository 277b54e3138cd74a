// Trains a small byte-level BPE tokenizer (GPT-2 style) and writes it as a Hugging Face
// tokenizer.json + tokenizer_config.json, with Gemma's special-token ids (0 <pad>, 1 <eos>,
// 2 <bos>, 3 <unk>) so the rest of loratune treats it like a real model's tokenizer.
import fs from "node:fs";
import path from "node:path";
import { LoratuneError } from "../errors.js";
import { writeFileAtomic } from "../io/atomic.js";

export interface TrainBpeOptions {
  /** Total number of token ids: special tokens + 256 bytes + learned merges. */
  vocabSize?: number;
  /** A pair seen fewer times than this in the corpus is never merged. */
  minFrequency?: number;
}

export interface TrainedTokenizer {
  tokenizerJson: object;
  tokenizerConfig: object;
}

const SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>"] as const;
const BOS = "<bos>";
/** The GPT-2 pre-tokenizer split, exactly as @huggingface/tokenizers' ByteLevel uses it at encode time. */
const GPT2_SPLIT = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;
/** Largest vocabulary: pair keys (a * vocabSize + b) must stay exact integers. */
const MAX_VOCAB_SIZE = 2 ** 26;
const BYTE_TOKEN_OFFSET = SPECIAL_TOKENS.length;

/** GPT-2's byte-to-unicode map: printable bytes stand for themselves, the rest move to U+0100 and up. */
function byteToUnicode(): string[] {
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const chars: string[] = new Array(256);
  let shifted = 0;
  for (let b = 0; b < 256; b++) chars[b] = String.fromCharCode(printable(b) ? b : 256 + shifted++);
  return chars;
}

/**
 * Max-heap of (count, pair key): highest count first, then the smaller key (lower token ids), so ties
 * break the same way on every run. Entries may be stale; the trainer checks them against the live counts.
 */
class PairHeap {
  private readonly counts: number[] = [];
  private readonly keys: number[] = [];

  get size(): number {
    return this.counts.length;
  }

  private before(i: number, j: number): boolean {
    const ci = this.counts[i]!, cj = this.counts[j]!;
    return ci > cj || (ci === cj && this.keys[i]! < this.keys[j]!);
  }

  private swap(i: number, j: number): void {
    [this.counts[i], this.counts[j]] = [this.counts[j]!, this.counts[i]!];
    [this.keys[i], this.keys[j]] = [this.keys[j]!, this.keys[i]!];
  }

  push(count: number, key: number): void {
    this.counts.push(count);
    this.keys.push(key);
    for (let i = this.counts.length - 1; i > 0; ) {
      const parent = (i - 1) >> 1;
      if (!this.before(i, parent)) break;
      this.swap(i, parent);
      i = parent;
    }
  }

  pop(): { count: number; key: number } {
    const top = { count: this.counts[0]!, key: this.keys[0]! };
    const lastCount = this.counts.pop()!, lastKey = this.keys.pop()!;
    if (this.counts.length > 0) {
      this.counts[0] = lastCount;
      this.keys[0] = lastKey;
      for (let i = 0; ; ) {
        const left = 2 * i + 1, right = left + 1;
        let best = i;
        if (left < this.counts.length && this.before(left, best)) best = left;
        if (right < this.counts.length && this.before(right, best)) best = right;
        if (best === i) break;
        this.swap(i, best);
        i = best;
      }
    }
    return top;
  }
}

/** Unique pre-tokenized words of the corpus and how often each occurs. */
function countWords(texts: Iterable<string>): Map<string, number> {
  const counts = new Map<string, number>();
  for (const text of texts) {
    for (const match of text.matchAll(GPT2_SPLIT)) {
      const word = match[0];
      counts.set(word, (counts.get(word) ?? 0) + 1);
    }
  }
  return counts;
}

/**
 * Learns byte-level BPE merges from `texts`. Pair counts are kept incrementally: each merge rescans
 * only the words that contain the merged pair and pushes the pairs whose counts grew onto a heap.
 */
export function trainBpeTokenizer(texts: Iterable<string>, { vocabSize = 4096, minFrequency = 2 }: TrainBpeOptions = {}): TrainedTokenizer {
  const baseSize = BYTE_TOKEN_OFFSET + 256;
  if (!Number.isInteger(vocabSize) || vocabSize < baseSize || vocabSize > MAX_VOCAB_SIZE) {
    throw new LoratuneError(`vocabulary size must be an integer from ${baseSize} to ${MAX_VOCAB_SIZE}, got ${vocabSize}`, { field: "vocabSize" });
  }
  if (!Number.isInteger(minFrequency) || minFrequency < 1) {
    throw new LoratuneError(`minimum frequency must be a positive integer, got ${minFrequency}`, { field: "minFrequency" });
  }

  const byteChars = byteToUnicode();
  const tokens: string[] = [...SPECIAL_TOKENS, ...byteChars];
  const tokenIds = new Map(tokens.map((t, id) => [t, id]));

  const wordSymbols: number[][] = [];
  const wordCounts: number[] = [];
  const encoder = new TextEncoder();
  for (const [word, count] of countWords(texts)) {
    wordSymbols.push(Array.from(encoder.encode(word), (b) => b + BYTE_TOKEN_OFFSET));
    wordCounts.push(count);
  }

  // A pair of token ids (a, b) is the key a * vocabSize + b: small vocabularies keep keys in V8's
  // small-integer range, which makes the maps several times faster than with larger keys.
  const pairBase = vocabSize;
  const pairCounts = new Map<number, number>();
  /** Words in which each pair occurs (or once did: stale entries are harmless, the rescan finds nothing). */
  const pairWords = new Map<number, number[]>();
  const notePairInWord = (pair: number, word: number) => {
    const list = pairWords.get(pair);
    if (list === undefined) pairWords.set(pair, [word]);
    else if (list[list.length - 1] !== word) list.push(word);
  };
  for (let w = 0; w < wordSymbols.length; w++) {
    const symbols = wordSymbols[w]!;
    for (let i = 0; i + 1 < symbols.length; i++) {
      const key = symbols[i]! * pairBase + symbols[i + 1]!;
      pairCounts.set(key, (pairCounts.get(key) ?? 0) + wordCounts[w]!);
      notePairInWord(key, w);
    }
  }
  const heap = new PairHeap();
  for (const [key, count] of pairCounts) heap.push(count, key);

  const merges: string[] = [];
  while (tokens.length < vocabSize && heap.size > 0) {
    const { count, key } = heap.pop();
    const live = pairCounts.get(key) ?? 0;
    // Counts only drop without a push; every rise pushes a fresh entry. So an entry above the live
    // count goes back with the live count, and one below it is superseded.
    if (count !== live) {
      if (count > live && live > 0) heap.push(live, key);
      continue;
    }
    if (live < minFrequency) break;

    const left = Math.floor(key / pairBase), right = key % pairBase;
    const text = tokens[left]! + tokens[right]!;
    merges.push(`${tokens[left]} ${tokens[right]}`);
    // Two different merges can spell the same string ("ab"+"c", "a"+"bc"); they share one id.
    let merged = tokenIds.get(text);
    if (merged === undefined) {
      merged = tokens.length;
      tokens.push(text);
      tokenIds.set(text, merged);
    }

    // Merge every occurrence in place, left to right, and record only the pairs around each one
    // (as the Hugging Face trainer does): (prev, left) and (right, next) give way to (prev, merged)
    // and (merged, next). A run like "a b a b" comes out right because `prev` is the merged symbol.
    const stepDelta = new Map<number, number>();
    for (const w of pairWords.get(key)!) {
      const symbols = wordSymbols[w]!;
      const weight = wordCounts[w]!;
      const change = (pair: number, delta: number) => {
        stepDelta.set(pair, (stepDelta.get(pair) ?? 0) + delta * weight);
        if (delta > 0) notePairInWord(pair, w);
      };
      let length = 0;
      for (let i = 0; i < symbols.length; i++) {
        if (symbols[i] === left && symbols[i + 1] === right) {
          change(key, -1);
          if (length > 0) {
            const prev = symbols[length - 1]!;
            change(prev * pairBase + left, -1);
            change(prev * pairBase + merged, +1);
          }
          if (i + 2 < symbols.length) {
            const next = symbols[i + 2]!;
            change(right * pairBase + next, -1);
            change(merged * pairBase + next, +1);
          }
          symbols[length++] = merged;
          i++;
        } else {
          symbols[length++] = symbols[i]!;
        }
      }
      symbols.length = length;
    }
    for (const [pair, delta] of stepDelta) {
      const updated = (pairCounts.get(pair) ?? 0) + delta;
      if (updated > 0) pairCounts.set(pair, updated);
      else pairCounts.delete(pair);
      if (delta > 0) heap.push(updated, pair);
    }
    pairWords.delete(key);
  }

  return { tokenizerJson: tokenizerJsonOf(tokens, merges), tokenizerConfig: tokenizerConfigOf() };
}

/** How the special tokens behave as added tokens: matched verbatim, never split or normalized. */
const SPECIAL_TOKEN_FLAGS = { single_word: false, lstrip: false, rstrip: false, normalized: false, special: true };

function tokenizerJsonOf(tokens: readonly string[], merges: readonly string[]): object {
  const bosId = SPECIAL_TOKENS.indexOf(BOS);
  const byteLevel = { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true };
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: SPECIAL_TOKENS.map((content, id) => ({ id, content, ...SPECIAL_TOKEN_FLAGS })),
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: BOS, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [
        { SpecialToken: { id: BOS, type_id: 0 } },
        { Sequence: { id: "A", type_id: 0 } },
        { SpecialToken: { id: BOS, type_id: 1 } },
        { Sequence: { id: "B", type_id: 1 } },
      ],
      special_tokens: { [BOS]: { id: BOS, ids: [bosId], tokens: [BOS] } },
    },
    decoder: byteLevel,
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab: Object.fromEntries(tokens.map((t, id) => [t, id])),
      merges,
    },
  };
}

function tokenizerConfigOf(): object {
  return {
    tokenizer_class: "PreTrainedTokenizerFast",
    bos_token: BOS,
    eos_token: "<eos>",
    pad_token: "<pad>",
    unk_token: "<unk>",
    add_bos_token: true,
    add_eos_token: false,
    // Byte-level decoding is exact; the default clean-up would turn " ." into "." and break round trips.
    clean_up_tokenization_spaces: false,
    added_tokens_decoder: Object.fromEntries(SPECIAL_TOKENS.map((content, id) => [String(id), { content, ...SPECIAL_TOKEN_FLAGS }])),
  };
}

/** Writes tokenizer.json and tokenizer_config.json into `dir` (created if missing), each atomically. */
export function saveTokenizer(dir: string, trained: TrainedTokenizer): void {
  try {
    fs.mkdirSync(dir, { recursive: true });
  } catch (e) {
    throw new LoratuneError(`cannot create the tokenizer folder: ${(e as Error).message}`, { file: dir });
  }
  writeFileAtomic(path.join(dir, "tokenizer.json"), JSON.stringify(trained.tokenizerJson, null, 2) + "\n");
  writeFileAtomic(path.join(dir, "tokenizer_config.json"), JSON.stringify(trained.tokenizerConfig, null, 2) + "\n");
}
