// Record formats → training examples. Every example is a prompt, the response that follows it and
// their concatenation `text`, so training can weight the loss on all tokens (the Keras default) or on
// the response only.
import { LoratuneError } from "../errors.js";
import { type BadRowHandler, type RecordFile, type SourceLocation, type SourceRecord, isRecord, typeName } from "./readers.js";
import {
  type CompiledTemplate,
  DEFAULT_CONTEXT_TEMPLATE,
  DEFAULT_INPUT_TEMPLATE,
  DEFAULT_TEMPLATE,
  compileTemplate,
} from "./templates.js";

/**
 * dolly: instruction, context, response, category. alpaca: instruction, input, output. messages: a
 * `messages` or `conversations` list of {role, content} or ShareGPT {from, value}. text: a `text` field.
 */
export type DataFormat = "dolly" | "alpaca" | "messages" | "text";
export type FormatChoice = DataFormat | "auto";

export type ChatRole = "system" | "user" | "assistant" | "tool";

export interface ChatMessage {
  role: ChatRole;
  content: string;
}

/** Renders a conversation, e.g. with the model's Jinja chat template. */
export type ChatTemplateFn = (messages: ChatMessage[], options: { addGenerationPrompt: boolean }) => string;

export interface Example {
  /** What the model is given; empty for the text format. */
  prompt: string;
  /** What the model learns to produce after the prompt. */
  response: string;
  /** prompt + response. */
  text: string;
  source: SourceLocation;
  category?: string;
  /** Chat examples: the conversation up to and including the assistant turn that is the response. */
  messages?: ChatMessage[];
}

export interface FormatOptions {
  format?: FormatChoice;
  /** Overrides the dolly/alpaca template (`{field}` placeholders); the prompt is what precedes `{response}`. */
  template?: string;
  /** The dolly/alpaca template for rows whose context/input is non-empty; defaults to `template` when that is set. */
  contextTemplate?: string;
  /** Maps a format's field name to the name it has in the data, e.g. `{instruction: "question", response: "answer"}`. */
  fields?: Readonly<Record<string, string>>;
  /** Required by the messages format. */
  chatTemplate?: ChatTemplateFn;
}

/** An example plus the dolly context / alpaca input it was made from, which the no-context filter reads. */
export interface FormattedRow {
  example: Example;
  context: string;
}

interface FieldSpec {
  required: readonly string[];
  optional: readonly string[];
}

const FORMAT_FIELDS: Record<DataFormat, FieldSpec> = {
  dolly: { required: ["instruction", "response"], optional: ["context", "category"] },
  alpaca: { required: ["instruction", "output"], optional: ["input", "category"] },
  messages: { required: [], optional: ["messages", "conversations", "category"] },
  text: { required: ["text"], optional: ["category"] },
};

interface InstructionFormat {
  contextField: string;
  responseField: string;
  placeholders: readonly string[];
  responsePlaceholders: readonly string[];
  defaultContextTemplate: string;
}

const INSTRUCTION_FORMATS: Record<"dolly" | "alpaca", InstructionFormat> = {
  dolly: {
    contextField: "context",
    responseField: "response",
    placeholders: ["instruction", "context", "response", "category"],
    responsePlaceholders: ["response"],
    defaultContextTemplate: DEFAULT_CONTEXT_TEMPLATE,
  },
  alpaca: {
    contextField: "input",
    responseField: "output",
    // {response} is an alias of {output}, so one template reads the same for both formats.
    placeholders: ["instruction", "input", "output", "response", "category"],
    responsePlaceholders: ["output", "response"],
    defaultContextTemplate: DEFAULT_INPUT_TEMPLATE,
  },
};

const CHAT_ROLES = new Map<string, ChatRole>([
  ["system", "system"],
  ["user", "user"],
  ["assistant", "assistant"],
  ["tool", "tool"],
  // ShareGPT
  ["human", "user"],
  ["gpt", "assistant"],
]);

const rethrow: BadRowHandler = (error) => {
  throw error;
};

/** Turns records into examples; row errors go to `onBadRow` (which throws unless rows are being skipped). */
export function formatRecords(
  file: RecordFile,
  options: FormatOptions = {},
  onBadRow: BadRowHandler = rethrow,
): { format: DataFormat; rows: FormattedRow[] } {
  const keyOf = (field: string) => options.fields?.[field] ?? field;
  const format = options.format === undefined || options.format === "auto" ? detectFormat(file, keyOf) : options.format;
  checkFieldMapping(format, options.fields);
  checkCsvColumns(file, format, keyOf);
  const formatRow = rowFormatter(format, options, keyOf, file.file);
  const rows: FormattedRow[] = [];
  for (const record of file.records) {
    try {
      rows.push(formatRow(record));
    } catch (error) {
      if (!(error instanceof LoratuneError)) throw error;
      onBadRow(error);
    }
  }
  return { format, rows };
}

/** The format whose fields the first record (or the CSV header) has. */
export function detectFormat(file: RecordFile, keyOf: (field: string) => string = (field) => field): DataFormat {
  const names = file.header?.columns ?? Object.keys(file.records[0]?.fields ?? {});
  const has = (field: string) => names.includes(keyOf(field));
  if (has("messages") || has("conversations")) return "messages";
  if (has("instruction") && has("response")) return "dolly";
  if (has("instruction") && has("output")) return "alpaca";
  if (has("text")) return "text";
  throw new LoratuneError(`cannot tell the data format from the fields (${names.join(", ") || "none"})`, {
    file: file.file,
    line: file.header?.line ?? file.records[0]?.source.line,
    hint:
      "expected instruction+response (dolly), instruction+output (alpaca), messages or conversations (chat) " +
      "or text; or name the format and map your fields to its names",
  });
}

function checkFieldMapping(format: DataFormat, fields: Readonly<Record<string, string>> | undefined): void {
  const known = [...FORMAT_FIELDS[format].required, ...FORMAT_FIELDS[format].optional];
  for (const [field, key] of Object.entries(fields ?? {})) {
    if (!known.includes(field)) {
      throw new LoratuneError(`the ${format} format has no field "${field}" to map`, {
        field: "fields",
        hint: `its fields: ${known.join(", ")}`,
      });
    }
    if (key === "") throw new LoratuneError(`field "${field}" is mapped to an empty name`, { field: "fields" });
  }
}

function checkCsvColumns(file: RecordFile, format: DataFormat, keyOf: (field: string) => string): void {
  if (!file.header) return;
  for (const field of FORMAT_FIELDS[format].required) {
    const column = keyOf(field);
    if (!file.header.columns.includes(column)) {
      throw new LoratuneError(`column is missing from the header (columns: ${file.header.columns.join(", ")})`, {
        file: file.file,
        line: file.header.line,
        field: column,
      });
    }
  }
}

function rowFormatter(
  format: DataFormat,
  options: FormatOptions,
  keyOf: (field: string) => string,
  fileName: string,
): (record: SourceRecord) => FormattedRow {
  switch (format) {
    case "dolly":
    case "alpaca":
      return instructionFormatter(INSTRUCTION_FORMATS[format], options, keyOf);
    case "messages": {
      const chatTemplate = options.chatTemplate;
      if (!chatTemplate) {
        throw new LoratuneError("the messages format needs a chat template to render conversations", {
          file: fileName,
          hint: "use the model's chat template (chat_template in tokenizer_config.json)",
        });
      }
      return (record) => chatRow(record, chatTemplate, keyOf);
    }
    case "text":
      return (record) => {
        const text = stringField(record, keyOf("text"), true);
        const example: Example = { prompt: "", response: text, text, source: record.source };
        return { example: withCategory(example, record, keyOf), context: "" };
      };
  }
}

function instructionFormatter(
  spec: InstructionFormat,
  options: FormatOptions,
  keyOf: (field: string) => string,
): (record: SourceRecord) => FormattedRow {
  const compile = (source: string, optionName: string) =>
    compileTemplate(source, spec.placeholders, spec.responsePlaceholders, optionName);
  const plain = compile(options.template ?? DEFAULT_TEMPLATE, "template");
  const withContext: CompiledTemplate = options.contextTemplate
    ? compile(options.contextTemplate, "contextTemplate")
    : options.template
      ? plain
      : compile(spec.defaultContextTemplate, "contextTemplate");
  return (record) => {
    const instruction = stringField(record, keyOf("instruction"), true);
    const response = stringField(record, keyOf(spec.responseField), true);
    const context = stringField(record, keyOf(spec.contextField), false) ?? "";
    const category = stringField(record, keyOf("category"), false) ?? "";
    const values: Record<string, string> = {
      instruction,
      [spec.contextField]: context,
      [spec.responseField]: response,
      response,
      category,
    };
    const { prompt, response: responseText } = (context.trim() === "" ? plain : withContext).render(values);
    const example: Example = { prompt, response: responseText, text: prompt + responseText, source: record.source };
    if (category) example.category = category;
    return { example, context };
  };
}

function chatRow(record: SourceRecord, chatTemplate: ChatTemplateFn, keyOf: (field: string) => string): FormattedRow {
  const { key, messages } = chatMessages(record, keyOf);
  const last = messages.map((message) => message.role).lastIndexOf("assistant");
  if (last < 0) throw rowError(record.source, key, "the conversation has no assistant turn to learn");
  // Turns after the last assistant turn teach nothing; the prompt is everything before that turn.
  const conversation = messages.slice(0, last + 1);
  const render = (turns: ChatMessage[], addGenerationPrompt: boolean) => {
    try {
      return chatTemplate(turns, { addGenerationPrompt });
    } catch (error) {
      throw rowError(record.source, key, `the chat template failed: ${(error as Error).message}`);
    }
  };
  const prompt = render(conversation.slice(0, last), true);
  const text = render(conversation, false);
  if (!text.startsWith(prompt)) {
    throw rowError(
      record.source,
      key,
      "the chat template's rendering of the conversation does not start with its rendering of the prompt " +
        "(the turns before the last assistant turn plus the generation prompt), so the response cannot be told apart",
    );
  }
  const example: Example = { prompt, response: text.slice(prompt.length), text, source: record.source, messages: conversation };
  return { example: withCategory(example, record, keyOf), context: "" };
}

function chatMessages(record: SourceRecord, keyOf: (field: string) => string): { key: string; messages: ChatMessage[] } {
  const key = [keyOf("messages"), keyOf("conversations")].find((name) => record.fields[name] !== undefined);
  if (key === undefined) {
    throw rowError(
      record.source,
      keyOf("messages"),
      `missing (expected "${keyOf("messages")}" or "${keyOf("conversations")}": a list of {role, content} or {from, value})`,
    );
  }
  const list = record.fields[key];
  if (!Array.isArray(list)) throw rowError(record.source, key, `expected a list of messages, got ${typeName(list)}`);
  if (list.length === 0) throw rowError(record.source, key, "the conversation is empty");
  const messages = list.map((item: unknown, k): ChatMessage => {
    const at = `${key}[${k}]`;
    if (!isRecord(item)) throw rowError(record.source, at, `expected {role, content} or {from, value}, got ${typeName(item)}`);
    const roleKey = "role" in item || !("from" in item) ? "role" : "from";
    const contentKey = "content" in item || !("value" in item) ? "content" : "value";
    const roleName = item[roleKey];
    if (typeof roleName !== "string") throw rowError(record.source, `${at}.${roleKey}`, describeNonString(roleName));
    const role = CHAT_ROLES.get(roleName);
    if (!role) {
      throw rowError(record.source, `${at}.${roleKey}`, `unknown role "${roleName}" (known: ${[...CHAT_ROLES.keys()].join(", ")})`);
    }
    const content = item[contentKey];
    if (typeof content !== "string") throw rowError(record.source, `${at}.${contentKey}`, describeNonString(content));
    return { role, content };
  });
  return { key, messages };
}

function withCategory(example: Example, record: SourceRecord, keyOf: (field: string) => string): Example {
  const category = stringField(record, keyOf("category"), false);
  if (category) example.category = category;
  return example;
}

/** A string field; an optional one may be absent or null. */
function stringField(record: SourceRecord, key: string, required: true): string;
function stringField(record: SourceRecord, key: string, required: false): string | undefined;
function stringField(record: SourceRecord, key: string, required: boolean): string | undefined {
  const value = record.fields[key];
  if (typeof value === "string") return value;
  if (!required && (value === undefined || value === null)) return undefined;
  const present = Object.keys(record.fields).join(", ") || "none";
  throw rowError(record.source, key, value === undefined ? `missing (the record has: ${present})` : describeNonString(value));
}

function describeNonString(value: unknown): string {
  return value === undefined ? "missing" : `expected a string, got ${typeName(value)}`;
}

function rowError(source: SourceLocation, field: string, message: string): LoratuneError {
  const record = source.index === undefined ? "" : ` (record index ${source.index})`;
  return new LoratuneError(message + record, { file: source.file, line: source.line, field });
}
