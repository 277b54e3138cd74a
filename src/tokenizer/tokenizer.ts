// The model's tokenizer from its tokenizer.json (via @huggingface/tokenizers) and
// tokenizer_config.json (special tokens, chat template rendered with @huggingface/jinja).
import fs from "node:fs";
import path from "node:path";
import { Template } from "@huggingface/jinja";
import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";
import { LoratuneError } from "../errors.js";

export interface ChatMessage {
  role: string;
  content: string;
}

function readJson(file: string, what: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch {
    throw new LoratuneError(`missing ${what}`, { file, hint: "a model folder needs tokenizer.json (and usually tokenizer_config.json)" });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new LoratuneError(`not valid JSON: ${(e as Error).message}`, { file });
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) throw new LoratuneError(`${what} must be a JSON object`, { file });
  return json as Record<string, unknown>;
}

/** A special token in tokenizer_config.json is a string or an AddedToken object {content, ...}. */
function tokenText(value: unknown): string | undefined {
  if (typeof value === "string") return value;
  if (typeof value === "object" && value !== null && typeof (value as { content?: unknown }).content === "string") {
    return (value as { content: string }).content;
  }
  return undefined;
}

/** tokenizer_config.json's chat_template is a string or a list of {name, template}; take "default". */
function chatTemplateOf(config: Record<string, unknown>): string | undefined {
  const t = config.chat_template;
  if (typeof t === "string") return t;
  if (Array.isArray(t)) {
    const named = t as Array<{ name?: unknown; template?: unknown }>;
    const chosen = named.find((e) => e.name === "default") ?? named[0];
    if (typeof chosen?.template === "string") return chosen.template;
  }
  return undefined;
}

export class Tokenizer {
  readonly bosId: number | undefined;
  readonly eosId: number | undefined;
  readonly padId: number | undefined;
  /** Largest token id + 1, added tokens included. */
  readonly vocabSize: number;
  /** Jinja chat template from tokenizer_config.json; may be replaced by the caller. */
  chatTemplate: string | undefined;
  private readonly bosToken: string | undefined;
  private readonly eosToken: string | undefined;
  private compiled: { source: string; template: Template } | undefined;

  private constructor(
    private readonly inner: HfTokenizer,
    config: Record<string, unknown>,
    private readonly source: string,
  ) {
    const specialId = (key: string, fallbacks: string[]): [string | undefined, number | undefined] => {
      for (const token of [tokenText(config[key]), ...fallbacks]) {
        if (token === undefined) continue;
        const id = inner.token_to_id(token);
        if (id !== undefined) return [token, id];
      }
      return [undefined, undefined];
    };
    [this.bosToken, this.bosId] = specialId("bos_token", ["<bos>", "<s>"]);
    [this.eosToken, this.eosId] = specialId("eos_token", ["<eos>", "</s>"]);
    this.padId = specialId("pad_token", ["<pad>"])[1];
    let maxId = -1;
    for (const id of inner.get_vocab(true).values()) if (id > maxId) maxId = id;
    this.vocabSize = maxId + 1;
    this.chatTemplate = chatTemplateOf(config);
  }

  /** tokenizer.json (required) and tokenizer_config.json (optional) from a model folder. */
  static fromDir(dir: string): Tokenizer {
    const configPath = path.join(dir, "tokenizer_config.json");
    return Tokenizer.fromFiles(path.join(dir, "tokenizer.json"), fs.existsSync(configPath) ? configPath : undefined);
  }

  static fromFiles(jsonPath: string, configPath?: string): Tokenizer {
    const json = readJson(jsonPath, "tokenizer.json");
    const config = configPath ? readJson(configPath, "tokenizer_config.json") : {};
    let inner: HfTokenizer;
    try {
      inner = new HfTokenizer(json, config);
    } catch (e) {
      throw new LoratuneError(`cannot build a tokenizer from it: ${(e as Error).message}`, { file: jsonPath });
    }
    return new Tokenizer(inner, config, jsonPath);
  }

  /** Token ids of `text`; addBos=false omits the BOS token the post-processor would add. */
  encode(text: string, { addBos = true }: { addBos?: boolean } = {}): number[] {
    return this.inner.encode(text, { add_special_tokens: addBos }).ids;
  }

  decode(ids: readonly number[], { skipSpecial = true }: { skipSpecial?: boolean } = {}): string {
    return this.inner.decode([...ids], { skip_special_tokens: skipSpecial });
  }

  idToToken(id: number): string | undefined {
    return this.inner.id_to_token(id);
  }

  tokenToId(token: string): number | undefined {
    return this.inner.token_to_id(token);
  }

  /**
   * Renders a conversation with the model's chat template. The result usually starts with the BOS
   * token text, so encode it with addBos=false.
   */
  applyChatTemplate(messages: ChatMessage[], { addGenerationPrompt = false }: { addGenerationPrompt?: boolean } = {}): string {
    if (this.chatTemplate === undefined) {
      throw new LoratuneError("has no chat_template", { file: this.source, hint: "use a model with a chat template (an instruction-tuned one) or format prompts yourself" });
    }
    try {
      if (this.compiled?.source !== this.chatTemplate) {
        this.compiled = { source: this.chatTemplate, template: new Template(this.chatTemplate) };
      }
      return this.compiled.template.render({
        messages,
        add_generation_prompt: addGenerationPrompt,
        bos_token: this.bosToken ?? "",
        eos_token: this.eosToken ?? "",
      });
    } catch (e) {
      // Includes the template's own raise_exception(...), which @huggingface/jinja defines.
      throw new LoratuneError(`chat template failed: ${(e as Error).message}`, { file: this.source });
    }
  }
}
