// LoRA adapters on disk in the Hugging Face PEFT layout, so they move freely to and from Python:
// a folder with adapter_config.json and adapter_model.safetensors whose tensors are named
// base_model.model.<module>.lora_A.weight [r, in] and base_model.model.<module>.lora_B.weight [out, r].
//
// Keras's per-head layout (groups = heads: A [heads*r, in], one B [out/heads, r] shared by the
// heads) is saved as the PEFT adapter it equals: rank heads*r, A as is, B block-diagonal with the
// shared B in each head's block. Such modules get rank heads*r and alpha heads*alpha through PEFT's
// rank_pattern / alpha_pattern, so alpha/r (the scale) is unchanged. Loading always gives PEFT-layout
// adapters (groups 1).
import fs from "node:fs";
import path from "node:path";
import { LoratuneError } from "../errors.js";
import { writeFileDurably, writeFolderAtomically } from "../io/atomic.js";
import { SafetensorsFile, writeSafetensors } from "../io/safetensors.js";
import type { ModelConfig } from "../models/config.js";
import type { Linear } from "../models/layers.js";
import type { CausalLM } from "../models/model.js";
import { Tensor } from "../tensor.js";
import { LORA_TARGETS, moduleOf, projectionOf, type LoraSpec } from "./lora.js";

export const ADAPTER_CONFIG_FILE = "adapter_config.json";
export const ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors";
/** PEFT prefixes module names with the wrapper's path (the adapter name itself is not saved). */
const PEFT_PREFIX = "base_model.model.";
/**
 * Version of the "loratune" record (layout, groups, base model sizes). It lives in the safetensors
 * header's __metadata__, not in adapter_config.json, where some PEFT versions refuse unknown keys.
 */
const LORATUNE_FORMAT = 1;

export interface SaveAdapterOptions {
  /** The base model's preset name, hub repository or local folder (PEFT's base_model_name_or_path). */
  baseModel: string;
  /** What enableLora returned. */
  spec: LoraSpec;
}

export interface LoadAdapterOptions {
  /** Called with each warning (base model mismatch, unusual task type); default: process.emitWarning. */
  onWarning?: (message: string) => void;
  /** Whether the loaded A and B require gradients (to continue training). Default true. */
  trainable?: boolean;
}

export interface LoadedAdapter {
  dir: string;
  /** Rank and alpha of adapter_config.json (r, lora_alpha), the projections adapted; layout "peft". */
  spec: LoraSpec;
  /** Modules that received an adapter, with the rank and scale used. */
  modules: Array<{ module: string; rank: number; scale: number }>;
  /** adapter_config.json as read. */
  config: Record<string, unknown>;
  warnings: string[];
}

// ---------------------------------------------------------------------------------------------
// Saving

/** A and B of one adapter in the PEFT layout (B made block-diagonal for Keras's per-head layout). */
export function peftFactors(linear: Linear): { A: Tensor; B: Tensor; rank: number; alpha: number } {
  const lora = linear.lora;
  if (!lora) throw new LoratuneError(`${moduleOf(linear)} has no LoRA adapter`);
  const { A, B, scale, groups } = lora;
  const rank = A.shape[0]!;
  const out = linear.outFeatures;
  const r = rank / groups;
  const d = out / groups;
  if (!Number.isInteger(r) || !Number.isInteger(d) || A.shape[1] !== linear.inFeatures || B.shape[0] !== d || B.shape[1] !== r) {
    throw new LoratuneError(
      `${moduleOf(linear)}: adapter shapes A [${A.shape.join(", ")}], B [${B.shape.join(", ")}] with ${groups} group(s) ` +
        `do not fit the weight [${linear.weight.shape.join(", ")}]`,
    );
  }
  const alpha = roundNearInteger(scale * rank);
  const a = A.dtype === "f32" ? A : A.toF32();
  if (groups === 1) return { A: a, B: B.dtype === "f32" ? B : B.toF32(), rank, alpha };
  const b = B.dtype === "f32" ? B.f32 : B.toF32().f32;
  const full = Tensor.zeros([out, rank]);
  for (let h = 0; h < groups; h++) {
    for (let i = 0; i < d; i++) {
      full.f32.set(b.subarray(i * r, (i + 1) * r), (h * d + i) * rank + h * r);
    }
  }
  return { A: a, B: full, rank, alpha };
}

/** Rounds away float noise from products like scale * rank (2.0000000000000004 -> 2). */
function roundNearInteger(x: number): number {
  const rounded = Math.round(x);
  return Math.abs(x - rounded) <= 1e-9 * Math.max(1, Math.abs(x)) ? rounded : x;
}

function baseRecord(config: ModelConfig): Record<string, unknown> {
  return {
    model_type: config.modelType,
    hidden_size: config.hiddenSize,
    num_hidden_layers: config.numLayers,
    vocab_size: config.vocabSize,
    num_attention_heads: config.numHeads,
    num_key_value_heads: config.numKvHeads,
    head_dim: config.headDim,
  };
}

/**
 * Writes the model's adapters as a PEFT adapter folder (adapter_config.json and
 * adapter_model.safetensors, f32), atomically: an existing adapter folder at `dir` is replaced whole.
 */
export function saveAdapter(model: CausalLM, dir: string, options: SaveAdapterOptions): void {
  const { spec, baseModel } = options;
  if (typeof baseModel !== "string" || baseModel === "") {
    throw new LoratuneError("saveAdapter needs the base model's name or path", { field: "baseModel" });
  }
  const adapted = model.linears().filter((l) => l.lora);
  if (adapted.length === 0) {
    throw new LoratuneError("the model has no LoRA adapters to save", { hint: "call enableLora (or loadAdapter) first" });
  }
  const rank = spec.rank;
  const alpha = spec.alpha ?? spec.rank;
  if (!Number.isInteger(rank) || rank < 1 || !(alpha > 0)) {
    throw new LoratuneError(`invalid LoRA spec: rank ${rank}, alpha ${alpha}`, { field: "spec" });
  }

  const tensors: Array<[string, Tensor]> = [];
  const groupsOf = new Map<string, number>();
  // Effective (rank, alpha) per projection, or per module when the layers disagree.
  const perProjection = new Map<string, Set<string>>();
  const perModule: Array<{ module: string; projection: string; rank: number; alpha: number }> = [];
  for (const linear of adapted) {
    const projection = projectionOf(linear);
    const module = moduleOf(linear);
    if (!spec.targets.includes(projection)) {
      throw new LoratuneError(
        `${module} has an adapter but the spec's targets (${spec.targets.join(", ")}) do not include ${projection}`,
        { field: "spec.targets", hint: "pass the spec that enableLora returned" },
      );
    }
    const groups = linear.lora!.groups;
    if (groups > 1 && spec.layout !== "keras") {
      throw new LoratuneError(`${module} has a per-head (Keras layout) adapter but the spec says layout "${spec.layout}"`, { field: "spec.layout" });
    }
    const previous = groupsOf.get(projection);
    groupsOf.set(projection, Math.max(previous ?? 1, groups));
    const f = peftFactors(linear);
    tensors.push([`${PEFT_PREFIX}${module}.lora_A.weight`, f.A], [`${PEFT_PREFIX}${module}.lora_B.weight`, f.B]);
    perModule.push({ module, projection, rank: f.rank, alpha: f.alpha });
    const key = `${f.rank}/${f.alpha}`;
    (perProjection.get(projection) ?? perProjection.set(projection, new Set()).get(projection)!).add(key);
  }
  const rankPattern: Record<string, number> = {};
  const alphaPattern: Record<string, number> = {};
  for (const m of perModule) {
    // PEFT matches a pattern key against the end of a module name (`(.*\.)?key$`): a projection name
    // covers every layer; full module names are used only when layers differ.
    const key = perProjection.get(m.projection)!.size === 1 ? m.projection : m.module;
    if (m.rank !== rank) rankPattern[key] = m.rank;
    if (m.alpha !== alpha) alphaPattern[key] = m.alpha;
  }
  const targets = LORA_TARGETS.filter((t) => perProjection.has(t));

  const config = {
    alpha_pattern: alphaPattern,
    auto_mapping: null,
    base_model_name_or_path: baseModel,
    bias: "none",
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    layers_pattern: null,
    layers_to_transform: null,
    lora_alpha: alpha,
    lora_dropout: 0,
    modules_to_save: null,
    peft_type: "LORA",
    r: rank,
    rank_pattern: rankPattern,
    revision: null,
    target_modules: targets,
    task_type: "CAUSAL_LM",
    use_dora: false,
    use_rslora: false,
  };
  const loratuneRecord = {
    format: LORATUNE_FORMAT,
    layout: spec.layout,
    rank,
    alpha,
    /** Keras layout: heads per projection; their B was expanded block-diagonally on export. */
    groups: Object.fromEntries(LORA_TARGETS.filter((t) => groupsOf.has(t)).map((t) => [t, groupsOf.get(t)!])),
    base: baseRecord(model.config),
  };
  writeFolderAtomically(dir, ADAPTER_CONFIG_FILE, "a LoRA adapter folder", (temp) => {
    writeSafetensors(path.join(temp, ADAPTER_WEIGHTS_FILE), tensors, { format: "pt", loratune: JSON.stringify(loratuneRecord) });
    writeFileDurably(path.join(temp, ADAPTER_CONFIG_FILE), `${JSON.stringify(config, null, 2)}\n`);
  });
}

// ---------------------------------------------------------------------------------------------
// Loading

/** PEFT's pattern match: key (a regular expression) matches the end of a module name after a dot. */
function patternMatches(key: string, module: string): boolean {
  try {
    return new RegExp(`^(?:.*\\.)?(?:${key})$`).test(module);
  } catch {
    return module === key || module.endsWith(`.${key}`);
  }
}

function patternValue(pattern: Record<string, number>, module: string, fallback: number): number {
  for (const [key, value] of Object.entries(pattern)) if (patternMatches(key, module)) return value;
  return fallback;
}

/** PEFT's target_modules: a list of names matched exactly or as a dotted suffix, or one regex. */
function targetMatcher(target: unknown, file: string, modules: string[]): (module: string) => boolean {
  if (typeof target === "string") {
    if (target === "all-linear") return () => true; // every projection (PEFT leaves out only the output layer)
    let re: RegExp;
    try {
      re = new RegExp(`^(?:${target})$`);
    } catch (e) {
      throw new LoratuneError(`target_modules ${JSON.stringify(target)} is not a valid regular expression: ${(e as Error).message}`,
        { file, field: "target_modules" });
    }
    if (!modules.some((m) => re.test(m))) {
      throw new LoratuneError(`target_modules ${JSON.stringify(target)} matches no module of this model (e.g. ${modules[0]})`,
        { file, field: "target_modules" });
    }
    return (m) => re.test(m);
  }
  if (!Array.isArray(target) || target.length === 0 || !target.every((t) => typeof t === "string" && t !== "")) {
    throw new LoratuneError(`target_modules must be a list of module names or a regular expression, got ${JSON.stringify(target)}`,
      { file, field: "target_modules" });
  }
  const names = target as string[];
  const matches = (t: string, m: string) => m === t || m.endsWith(`.${t}`);
  const known = [...new Set(modules.map((m) => m.split(".").pop()!))];
  for (const t of names) {
    if (!modules.some((m) => matches(t, m))) {
      throw new LoratuneError(`unknown target module "${t}": this model has no such module (its projections: ${known.join(", ")})`,
        { file, field: "target_modules" });
    }
  }
  return (m) => names.some((t) => matches(t, m));
}

function readAdapterConfig(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch {
    throw new LoratuneError(`missing: a PEFT adapter folder holds ${ADAPTER_CONFIG_FILE} and ${ADAPTER_WEIGHTS_FILE}`, { file });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new LoratuneError(`not valid JSON: ${(e as Error).message}`, { file });
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) throw new LoratuneError("must be a JSON object", { file });
  return json as Record<string, unknown>;
}

interface ParsedConfig {
  r: number;
  alpha: number;
  rslora: boolean;
  rankPattern: Record<string, number>;
  alphaPattern: Record<string, number>;
}

/** Validates adapter_config.json: only what loratune computes exactly as PEFT does is accepted. */
function parseAdapterConfig(raw: Record<string, unknown>, file: string, warn: (m: string) => void): ParsedConfig {
  const fail = (field: string, message: string, hint?: string) => new LoratuneError(message, { file, field, hint });
  const peftType = raw.peft_type;
  if (peftType !== "LORA") {
    throw fail("peft_type", `is ${JSON.stringify(peftType ?? null)}; only LoRA adapters ("LORA") are supported`);
  }
  if (raw.use_dora === true) throw fail("use_dora", "DoRA adapters (use_dora: true) are not supported; only plain LoRA");
  if (raw.bias !== undefined && raw.bias !== null && raw.bias !== "none") {
    throw fail("bias", `is ${JSON.stringify(raw.bias)}; only "none" is supported (the adapter would carry trained biases loratune cannot apply)`);
  }
  if (raw.lora_bias === true) throw fail("lora_bias", "LoRA with a bias on B (lora_bias: true) is not supported");
  const modulesToSave = raw.modules_to_save;
  if (modulesToSave !== undefined && modulesToSave !== null && !(Array.isArray(modulesToSave) && modulesToSave.length === 0)) {
    throw fail("modules_to_save", `is ${JSON.stringify(modulesToSave)}; fully trained extra modules are not supported (only null)`);
  }
  if (raw.fan_in_fan_out === true) {
    throw fail("fan_in_fan_out", "is true (GPT-2 style Conv1D weights stored [in, out]); only false is supported");
  }
  if (raw.layer_replication !== undefined && raw.layer_replication !== null) {
    throw fail("layer_replication", "layer replication is not supported (only null)");
  }
  for (const field of ["target_parameters", "trainable_token_indices"]) {
    const v = raw[field];
    if (v !== undefined && v !== null && !(Array.isArray(v) && v.length === 0) && !(typeof v === "object" && Object.keys(v).length === 0)) {
      throw fail(field, `is ${JSON.stringify(v)}; not supported (only null)`);
    }
  }
  if (raw.task_type !== undefined && raw.task_type !== null && raw.task_type !== "CAUSAL_LM") {
    warn(`${file}: task_type is ${JSON.stringify(raw.task_type)}; loratune uses the adapter for causal language modelling`);
  }
  // PEFT's defaults: r 8, lora_alpha 8.
  const r = raw.r ?? 8;
  if (typeof r !== "number" || !Number.isSafeInteger(r) || r < 1) throw fail("r", `must be a whole number >= 1, got ${JSON.stringify(r)}`);
  const alpha = raw.lora_alpha ?? 8;
  if (typeof alpha !== "number" || !Number.isFinite(alpha) || alpha <= 0) throw fail("lora_alpha", `must be a number > 0, got ${JSON.stringify(alpha)}`);
  const rslora = raw.use_rslora ?? false;
  if (typeof rslora !== "boolean") throw fail("use_rslora", `must be true or false, got ${JSON.stringify(rslora)}`);
  const pattern = (field: string, integer: boolean): Record<string, number> => {
    const v = raw[field];
    if (v === undefined || v === null) return {};
    if (typeof v !== "object" || Array.isArray(v)) throw fail(field, `must be an object of module pattern -> number, got ${JSON.stringify(v)}`);
    for (const [k, n] of Object.entries(v)) {
      if (typeof n !== "number" || !(n > 0) || !Number.isFinite(n) || (integer && !Number.isSafeInteger(n))) {
        throw fail(`${field}.${k}`, `must be a ${integer ? "whole " : ""}number > 0, got ${JSON.stringify(n)}`);
      }
    }
    return v as Record<string, number>;
  };
  return { r, alpha, rslora, rankPattern: pattern("rank_pattern", true), alphaPattern: pattern("alpha_pattern", false) };
}

/** Compares the base model recorded by the adapter (loratune record or a local base folder) with the model. */
function checkBaseModel(raw: Record<string, unknown>, record: unknown, model: CausalLM, dir: string, warn: (m: string) => void): void {
  const c = model.config;
  const have: Record<string, number> = { hidden_size: c.hiddenSize, num_hidden_layers: c.numLayers, vocab_size: c.vocabSize };
  const compare = (recorded: Record<string, unknown>, source: string) => {
    const differ = Object.keys(have).filter((k) => typeof recorded[k] === "number" && recorded[k] !== have[k]);
    if (differ.length > 0) {
      warn(`${dir}: the adapter's base model (${source}) has ${differ.map((k) => `${k} ${recorded[k]}`).join(", ")} ` +
        `but this model has ${differ.map((k) => `${k} ${have[k]}`).join(", ")}: it was trained for another model`);
      return true;
    }
    return false;
  };
  const base = (record as { base?: unknown } | undefined)?.base;
  if (typeof base === "object" && base !== null && compare(base as Record<string, unknown>, `recorded in ${ADAPTER_WEIGHTS_FILE}`)) return;
  const baseName = raw.base_model_name_or_path;
  // A local base folder (PEFT records the path given to from_pretrained); hub names are not fetched.
  if (typeof baseName === "string" && baseName !== "") {
    const file = path.join(baseName, "config.json");
    if (!fs.existsSync(file)) return;
    try {
      compare(JSON.parse(fs.readFileSync(file, "utf8")) as Record<string, unknown>, file);
    } catch {
      // an unreadable base config is not the adapter's problem
    }
  }
}

/** The "loratune" record of a safetensors header, if present and readable. */
export function readLoratuneRecord(text: string | undefined): Record<string, unknown> | undefined {
  if (text === undefined) return undefined;
  try {
    const parsed: unknown = JSON.parse(text);
    return typeof parsed === "object" && parsed !== null ? (parsed as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

const FLOAT_STORAGE = new Set(["F32", "BF16", "F16"]);

/**
 * Reads a PEFT LoRA adapter folder, validates it against the model and attaches its adapters
 * (groups 1, scale lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora, per module through
 * rank_pattern / alpha_pattern). Adapters already on the model are removed first; nothing changes
 * when validation fails. Base weights are frozen.
 */
export function loadAdapter(model: CausalLM, dir: string, options: LoadAdapterOptions = {}): LoadedAdapter {
  const warnings: string[] = [];
  const warn = (message: string) => {
    warnings.push(message);
    if (options.onWarning) options.onWarning(message);
    else process.emitWarning(message, { type: "LoratuneWarning" });
  };
  let stat: fs.Stats;
  try {
    stat = fs.statSync(dir);
  } catch {
    throw new LoratuneError("adapter folder does not exist", { file: dir });
  }
  if (!stat.isDirectory()) {
    throw new LoratuneError(`is not a folder (a PEFT adapter is a folder with ${ADAPTER_CONFIG_FILE} and ${ADAPTER_WEIGHTS_FILE})`, { file: dir });
  }
  const weightsFile = path.join(dir, ADAPTER_WEIGHTS_FILE);
  if (!fs.existsSync(weightsFile)) {
    const pickles = fs.readdirSync(dir).filter((n) => /\.(bin|pt|pth|ckpt)$/i.test(n));
    if (pickles.length > 0) {
      throw new LoratuneError(
        `holds ${pickles.sort().join(", ")} (PyTorch pickle) and no ${ADAPTER_WEIGHTS_FILE}: pickles can execute code and are refused`,
        {
          file: dir,
          hint: "convert it in Python: PeftModel.from_pretrained(base, dir).save_pretrained(out, safe_serialization=True)",
        },
      );
    }
    throw new LoratuneError(`missing ${ADAPTER_WEIGHTS_FILE}`, { file: dir });
  }
  const configFile = path.join(dir, ADAPTER_CONFIG_FILE);
  const raw = readAdapterConfig(configFile);
  const cfg = parseAdapterConfig(raw, configFile, warn);
  const linears = new Map(model.linears().map((l) => [moduleOf(l), l]));
  const moduleNames = [...linears.keys()];
  const targeted = targetMatcher(raw.target_modules, configFile, moduleNames);
  const layers = raw.layers_to_transform;

  const file = SafetensorsFile.open(weightsFile);
  try {
    checkBaseModel(raw, readLoratuneRecord(file.metadata.loratune), model, dir, warn);
    const found = new Map<string, { A?: string; B?: string }>();
    for (const name of file.names()) {
      const fail = (message: string, hint?: string) => new LoratuneError(`tensor ${name}: ${message}`, { file: weightsFile, hint });
      if (/\.lora_magnitude_vector(\.|$)/.test(name)) throw fail("is a DoRA magnitude; DoRA adapters are not supported");
      if (/\.lora_embedding_[AB](\.|$)/.test(name)) throw fail("is an embedding adapter; only adapters on linear projections are supported");
      const m = /^base_model\.model\.(.+)\.lora_([AB])\.weight$/.exec(name);
      if (!m) {
        throw fail(`is not a LoRA factor (expected ${PEFT_PREFIX}<module>.lora_A.weight / .lora_B.weight)`,
          name.endsWith(".bias") ? "adapters with biases are not supported" : undefined);
      }
      const module = m[1]!;
      if (!linears.has(module)) {
        throw fail(`is for module ${module}, which this model does not have (its modules look like ${moduleNames[0]})`,
          "the adapter was trained for another base model");
      }
      if (!targeted(module)) throw fail(`is for module ${module}, which target_modules ${JSON.stringify(raw.target_modules)} does not include`);
      const info = file.info(name);
      if (!FLOAT_STORAGE.has(info.dtype)) throw fail(`has dtype ${info.dtype}; LoRA factors must be F32, BF16 or F16`);
      const entry = found.get(module) ?? {};
      entry[m[2] as "A" | "B"] = name;
      found.set(module, entry);
    }
    if (found.size === 0) throw new LoratuneError("holds no LoRA tensors", { file: weightsFile });
    if (Array.isArray(layers) && layers.length > 0) {
      for (const module of found.keys()) {
        const layer = /\.layers\.(\d+)\./.exec(module)?.[1];
        if (layer !== undefined && !layers.includes(Number(layer))) {
          warn(`${weightsFile}: ${module} has an adapter but layers_to_transform ${JSON.stringify(layers)} leaves layer ${layer} out`);
        }
      }
    }

    const plan: Array<{ linear: Linear; module: string; a: string; b: string; rank: number; scale: number }> = [];
    for (const [module, { A, B }] of found) {
      if (!A || !B) {
        throw new LoratuneError(`module ${module} has lora_${A ? "A" : "B"} but no lora_${A ? "B" : "A"}`, { file: weightsFile });
      }
      const linear = linears.get(module)!;
      const rank = patternValue(cfg.rankPattern, module, cfg.r);
      const alpha = patternValue(cfg.alphaPattern, module, cfg.alpha);
      const expectA = [rank, linear.inFeatures];
      const expectB = [linear.outFeatures, rank];
      for (const [name, expect] of [[A, expectA], [B, expectB]] as const) {
        const shape = file.info(name).shape;
        if (shape.length !== 2 || shape[0] !== expect[0] || shape[1] !== expect[1]) {
          throw new LoratuneError(
            `tensor ${name} has shape [${shape.join(", ")}] but [${expect.join(", ")}] is expected ` +
              `(rank ${rank} from adapter_config.json, weight ${linear.name} [${linear.weight.shape.join(", ")}])`,
            { file: weightsFile, hint: "the adapter does not fit this base model, or r / rank_pattern disagree with its tensors" },
          );
        }
      }
      plan.push({ linear, module, a: A, b: B, rank, scale: cfg.rslora ? alpha / Math.sqrt(rank) : alpha / rank });
    }

    // Everything is valid: read the factors, then swap the adapters in.
    const trainable = options.trainable ?? true;
    const loaded = plan.map((p) => {
      const A = file.read(p.a, "f32");
      const B = file.read(p.b, "f32");
      A.requiresGrad = B.requiresGrad = trainable;
      return { ...p, A, B };
    });
    for (const w of model.weights().values()) w.requiresGrad = false;
    for (const l of model.linears()) l.lora = null;
    for (const p of loaded) p.linear.lora = { A: p.A, B: p.B, scale: p.scale, groups: 1 };

    const projections = new Set(plan.map((p) => projectionOf(p.linear)));
    const spec: LoraSpec = {
      rank: cfg.r,
      alpha: cfg.alpha,
      targets: LORA_TARGETS.filter((t) => projections.has(t)),
      layout: "peft",
    };
    model.lora = spec;
    const order = new Map(moduleNames.map((m, i) => [m, i]));
    const modules = plan.map((p) => ({ module: p.module, rank: p.rank, scale: p.scale }))
      .sort((x, y) => order.get(x.module)! - order.get(y.module)!);
    return { dir, spec, modules, config: raw, warnings };
  } finally {
    file.close();
  }
}
