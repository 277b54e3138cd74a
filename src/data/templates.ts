// Prompt templates with Python str.format-style `{field}` placeholders (the walkthrough builds its
// examples with `template.format(**features)`); `{{` and `}}` are literal braces. A template is split
// at its response placeholder: what comes before is the prompt, the rest is the response.
import { LoratuneError } from "../errors.js";

/** The walkthrough's template, exactly. */
export const DEFAULT_TEMPLATE = "Instruction:\n{instruction}\n\nResponse:\n{response}";
/** Alpaca rows with a non-empty `input`. */
export const DEFAULT_INPUT_TEMPLATE = "Instruction:\n{instruction}\n\nInput:\n{input}\n\nResponse:\n{response}";
/** Dolly rows with a non-empty `context` (the walkthrough filters them out; kept ones should see it). */
export const DEFAULT_CONTEXT_TEMPLATE = "Instruction:\n{instruction}\n\nContext:\n{context}\n\nResponse:\n{response}";

type Segment = { literal: string } | { placeholder: string };

export interface CompiledTemplate {
  readonly source: string;
  /** Fills the placeholders; `prompt + response` is the whole text. */
  render(values: Readonly<Record<string, string>>): { prompt: string; response: string };
}

/**
 * @param placeholders the names a template may use
 * @param responsePlaceholders the names that mark where the response starts; exactly one must occur once
 * @param optionName how the user set this template, for errors (e.g. "template")
 */
export function compileTemplate(
  source: string,
  placeholders: readonly string[],
  responsePlaceholders: readonly string[],
  optionName = "template",
): CompiledTemplate {
  const segments = parseTemplate(source, optionName);
  for (const segment of segments) {
    if ("placeholder" in segment && !placeholders.includes(segment.placeholder)) {
      throw new LoratuneError(`unknown placeholder {${segment.placeholder}}`, {
        field: optionName,
        hint: `placeholders for this format: ${placeholders.map((name) => `{${name}}`).join(", ")}`,
      });
    }
  }
  const responseAt = segments.filter((segment) => "placeholder" in segment && responsePlaceholders.includes(segment.placeholder));
  if (responseAt.length !== 1) {
    throw new LoratuneError(
      `needs exactly one response placeholder (${responsePlaceholders.map((name) => `{${name}}`).join(" or ")}), found ${responseAt.length}`,
      { field: optionName, hint: `e.g. ${JSON.stringify(DEFAULT_TEMPLATE)}` },
    );
  }
  const split = segments.indexOf(responseAt[0]!);
  const fill = (part: Segment[], values: Readonly<Record<string, string>>) =>
    part.map((segment) => ("literal" in segment ? segment.literal : values[segment.placeholder] ?? "")).join("");
  const promptSegments = segments.slice(0, split);
  const responseSegments = segments.slice(split);
  return {
    source,
    render: (values) => ({ prompt: fill(promptSegments, values), response: fill(responseSegments, values) }),
  };
}

function parseTemplate(source: string, optionName: string): Segment[] {
  const segments: Segment[] = [];
  let literal = "";
  for (let i = 0; i < source.length; i++) {
    const c = source[i]!;
    if ((c === "{" || c === "}") && source[i + 1] === c) {
      literal += c;
      i++;
    } else if (c === "{") {
      const close = source.indexOf("}", i);
      const name = close < 0 ? "" : source.slice(i + 1, close);
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
        throw new LoratuneError(`bad placeholder at character ${i + 1}: expected {name}`, {
          field: optionName,
          hint: "write {{ and }} for literal braces",
        });
      }
      if (literal) segments.push({ literal });
      literal = "";
      segments.push({ placeholder: name });
      i = close;
    } else if (c === "}") {
      throw new LoratuneError(`single } at character ${i + 1}`, { field: optionName, hint: "write }} for a literal brace" });
    } else {
      literal += c;
    }
  }
  if (literal) segments.push({ literal });
  return segments;
}
