// The data layer: readers, formats and templates, dataset loading and description.
export { BUILTIN_DATASETS, type BuiltinDataset, builtinDatasetPath, packageRoot } from "./builtins.js";
export { type Dataset, type DatasetPlan, type DatasetSpec, type SelectionStep, loadDataset } from "./dataset.js";
export {
  type DatasetDescription,
  type DescribeOptions,
  type TokenLengthStats,
  describeDataset,
  formatDescription,
} from "./describe.js";
export {
  type ChatMessage,
  type ChatRole,
  type ChatTemplateFn,
  type DataFormat,
  type Example,
  type FormatChoice,
  type FormatOptions,
  type FormattedRow,
  detectFormat,
  formatRecords,
} from "./formats.js";
export {
  type BadRowHandler,
  type CsvHeader,
  type FileFormat,
  type ReadOptions,
  type RecordFile,
  type SourceLocation,
  type SourceRecord,
  decodeUtf8,
  detectFileFormat,
  parseCsv,
  parseJsonArray,
  parseJsonl,
  parseRecords,
  readRecords,
} from "./readers.js";
export {
  type CompiledTemplate,
  DEFAULT_CONTEXT_TEMPLATE,
  DEFAULT_INPUT_TEMPLATE,
  DEFAULT_TEMPLATE,
  compileTemplate,
} from "./templates.js";
