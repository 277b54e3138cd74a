// Text generation with a key/value cache: the prompt is run once (prefill), then one token per
// step. Lengths follow Keras: maxLength counts the prompt too; maxNewTokens counts only new tokens.
import { native } from "../backend/native.js";
import { LoratuneError } from "../errors.js";
import type { CausalLM } from "../models/model.js";
import { tidy } from "../tensor.js";
import { Random } from "./random.js";
import { makeSampler, type Sampler, type SamplerName } from "./samplers.js";

/** What generation needs from a tokenizer (the library's Tokenizer has it). */
export interface GenerationTokenizer {
  encode(text: string, options?: { addBos?: boolean }): number[];
  decode(ids: number[]): string;
  tokenToId?(token: string): number | undefined;
}

export interface GenerateOptions {
  /** Total length, prompt included (Keras's max_length). Default 256 when maxNewTokens is not given. */
  maxLength?: number;
  /** New tokens at most; when both are given the tighter limit wins. */
  maxNewTokens?: number;
  sampler?: Sampler | SamplerName;
  /** Seed of the sampler's generator: the same seed gives the same draws on every run. */
  seed?: number;
  /** Token ids that end generation (default: the model's EOS ids and the tokenizer's <end_of_turn>). */
  stopTokenIds?: number[];
  /** Strings that end generation; the completion is cut before them. */
  stopStrings?: string[];
  /** Whether a text prompt gets the BOS token (default true). */
  addBos?: boolean;
}

export type Prompt = string | { ids: number[] };

export interface Generation {
  /** Prompt and new tokens. */
  ids: number[];
  promptIds: number[];
  newIds: number[];
  /** Prompt and completion as text, as Keras's generate() returns it. */
  text: string;
  /** The new text only. */
  completion: string;
  finishReason: "eos" | "stop_string" | "length";
}

export interface StreamChunk {
  id: number;
  /** Text added by this token (may be empty while a multi-byte character is incomplete). */
  text: string;
}

export class TextGenerator {
  constructor(readonly model: CausalLM, readonly tokenizer: GenerationTokenizer | null = null) {}

  /** Generates for one prompt, or for each of a batch of prompts. */
  generate(prompt: Prompt, options?: GenerateOptions): Generation;
  generate(prompts: Prompt[], options?: GenerateOptions): Generation[];
  generate(prompt: Prompt | Prompt[], options: GenerateOptions = {}): Generation | Generation[] {
    if (Array.isArray(prompt)) return prompt.map((p) => this.generate(p, options));
    const run = this.start(prompt, options);
    while (run.step()) { /* run to the end */ }
    return run.result();
  }

  /** Streams the new tokens of one prompt as they are chosen. */
  async *stream(prompt: Prompt, options: GenerateOptions = {}): AsyncGenerator<StreamChunk, Generation> {
    const run = this.start(prompt, options);
    let shown = "";
    while (run.step()) {
      const text = run.completionText();
      // Hold back a trailing replacement character: the next token may complete it.
      const stable = text.endsWith("\uFFFD") ? text.slice(0, -1) : text;
      const delta = stable.startsWith(shown) ? stable.slice(shown.length) : "";
      if (stable.startsWith(shown)) shown = stable;
      yield { id: run.lastId, text: delta };
      await Promise.resolve();
    }
    return run.result();
  }

  private start(prompt: Prompt, o: GenerateOptions): GenerationRun {
    const promptIds = this.encodePrompt(prompt, o.addBos ?? true);
    const limit = this.model.config.maxPositions;
    const maxLength = Math.min(
      o.maxLength ?? (o.maxNewTokens === undefined ? 256 : Infinity),
      o.maxNewTokens === undefined ? Infinity : promptIds.length + o.maxNewTokens,
      limit,
    );
    if (promptIds.length >= maxLength) {
      throw new LoratuneError(
        `the prompt has ${promptIds.length} tokens, which leaves no room under the length limit of ${maxLength}` +
          (maxLength === limit ? ` (the model's context)` : ""),
        { field: "prompt", hint: "raise --max-length / --max-new-tokens or shorten the prompt" },
      );
    }
    const sampler = typeof o.sampler === "object" ? o.sampler : makeSampler(o.sampler ?? "greedy");
    const stopIds = new Set(o.stopTokenIds ?? this.defaultStopIds());
    return new GenerationRun(this.model, this.tokenizer, promptIds, maxLength, sampler, new Random(o.seed ?? 0),
      stopIds, o.stopStrings ?? []);
  }

  private defaultStopIds(): number[] {
    const ids = [...this.model.config.eosTokenIds];
    const endOfTurn = this.tokenizer?.tokenToId?.("<end_of_turn>");
    if (endOfTurn !== undefined && endOfTurn !== null) ids.push(endOfTurn);
    return ids;
  }

  private encodePrompt(prompt: Prompt, addBos: boolean): number[] {
    const vocab = this.model.config.vocabSize;
    if (typeof prompt === "string") {
      if (prompt.length === 0) throw new LoratuneError("the prompt is empty", { field: "prompt" });
      if (!this.tokenizer) throw new LoratuneError("a text prompt needs a tokenizer (tokenizer.json); pass token ids instead");
      return this.tokenizer.encode(prompt, { addBos });
    }
    if (prompt.ids.length === 0) throw new LoratuneError("the prompt has no token ids", { field: "prompt" });
    prompt.ids.forEach((id, i) => {
      if (!Number.isInteger(id) || id < 0 || id >= vocab) {
        throw new LoratuneError(`token id ${id} at position ${i} is outside the vocabulary (0..${vocab - 1})`, { field: "prompt" });
      }
    });
    return [...prompt.ids];
  }
}

/** One generation in progress: the cache, the ids so far, and why it stopped. */
class GenerationRun {
  private readonly ids: number[];
  private readonly cache;
  private readonly logits: Float32Array;
  private pendingIds: number[];
  private finish: Generation["finishReason"] | null = null;
  private cut = -1;
  lastId = -1;

  constructor(
    private readonly model: CausalLM,
    private readonly tokenizer: GenerationTokenizer | null,
    private readonly promptIds: number[],
    private readonly maxLength: number,
    private readonly sampler: Sampler,
    private readonly rng: Random,
    private readonly stopIds: Set<number>,
    private readonly stopStrings: string[],
  ) {
    this.ids = [...promptIds];
    this.cache = model.newCache(maxLength);
    this.logits = new Float32Array(native.alloc(model.config.vocabSize * 4));
    this.pendingIds = promptIds;
  }

  /** Chooses one more token; false once generation has ended. */
  step(): boolean {
    if (this.finish) return false;
    const { vocabSize, hiddenSize } = this.model.config;
    tidy(() => {
      const hidden = this.model.forward(Int32Array.from(this.pendingIds), { cache: this.cache });
      const last = hidden.f32.subarray((this.pendingIds.length - 1) * hiddenSize);
      native.gemm(false, true, 1, vocabSize, hiddenSize, 1, last, hiddenSize, this.model.lmHead.weights, hiddenSize, 0,
        this.logits, vocabSize);
    });
    const id = this.sampler.next(this.logits, this.rng);
    this.lastId = id;
    this.ids.push(id);
    this.pendingIds = [id];
    if (this.stopIds.has(id)) this.finish = "eos";
    else if (this.stopStrings.length > 0 && this.findStopString() >= 0) this.finish = "stop_string";
    else if (this.ids.length >= this.maxLength) this.finish = "length";
    return true;
  }

  private findStopString(): number {
    const text = this.decode(this.newIds());
    for (const s of this.stopStrings) {
      const at = text.indexOf(s);
      if (at >= 0) return (this.cut = at);
    }
    return -1;
  }

  private newIds(): number[] {
    return this.ids.slice(this.promptIds.length);
  }

  private decode(ids: number[]): string {
    return this.tokenizer ? this.tokenizer.decode(ids) : "";
  }

  completionText(): string {
    const text = this.decode(this.newIds());
    return this.cut >= 0 ? text.slice(0, this.cut) : text;
  }

  result(): Generation {
    const completion = this.completionText();
    return {
      ids: [...this.ids],
      promptIds: [...this.promptIds],
      newIds: this.newIds(),
      text: this.decode(this.promptIds) + completion,
      completion,
      finishReason: this.finish ?? "length",
    };
  }
}
