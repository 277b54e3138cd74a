// Readers for training data files: JSONL, JSON arrays and CSV (RFC 4180), each record tagged with the
// line it starts on so that every later error can name `file:line`.
import { readFileSync } from "node:fs";
import { extname } from "node:path";
import { LoratuneError } from "../errors.js";

export type FileFormat = "jsonl" | "json" | "csv";

/** Where a record came from: the 1-based line of its first character; `index` for records of a JSON array. */
export interface SourceLocation {
  file: string;
  line: number;
  index?: number;
}

export interface SourceRecord {
  fields: Record<string, unknown>;
  source: SourceLocation;
}

export interface RecordFile {
  file: string;
  fileFormat: FileFormat;
  records: SourceRecord[];
  /** Rows that failed to parse and were handed to `onBadRow` (which chose not to throw). */
  badRows: number;
  /** The CSV header, so that a missing column is reported once, at the header's line. */
  header?: CsvHeader;
}

/** Receives an error about one row: throw it to stop, or return to skip the row (`skipBadRows`). */
export type BadRowHandler = (error: LoratuneError) => void;

export interface ReadOptions {
  /** Overrides detection from the extension and the content. */
  fileFormat?: FileFormat;
  onBadRow?: BadRowHandler;
}

const rethrow: BadRowHandler = (error) => {
  throw error;
};

export function readRecords(file: string, options: ReadOptions = {}): RecordFile {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(file);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const message = code === "ENOENT" ? "no such file" : `cannot read the file (${(error as Error).message})`;
    throw new LoratuneError(message, { file });
  }
  return parseRecords(decodeUtf8(bytes, file), file, options);
}

/** Parses text already read from `file` (the name is used for detection and in errors). */
export function parseRecords(text: string, file: string, options: ReadOptions = {}): RecordFile {
  if (text.trim() === "") throw new LoratuneError("the file is empty", { file });
  const fileFormat = options.fileFormat ?? detectFileFormat(file, text);
  let badRows = 0;
  const onBadRow: BadRowHandler = (error) => {
    (options.onBadRow ?? rethrow)(error);
    badRows++;
  };
  switch (fileFormat) {
    case "jsonl":
      return { file, fileFormat, records: parseJsonl(text, file, onBadRow), badRows };
    case "json":
      return { file, fileFormat, records: parseJsonArray(text, file, onBadRow), badRows };
    case "csv": {
      const { header, records } = parseCsv(text, file, onBadRow);
      return { file, fileFormat, records, header, badRows };
    }
  }
}

/** Strict UTF-8 decoding; on bad bytes, finds the first line holding them. A leading BOM is dropped. */
export function decodeUtf8(bytes: Uint8Array, file: string): string {
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    // 0x0A never occurs inside a multi-byte UTF-8 sequence, so the bytes can be split into lines first.
    let line = 1;
    let start = 0;
    for (let i = 0; i <= bytes.length; i++) {
      if (i < bytes.length && bytes[i] !== 0x0a) continue;
      try {
        new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(start, i));
      } catch {
        break;
      }
      line++;
      start = i + 1;
    }
    throw new LoratuneError("the file is not valid UTF-8 text", {
      file,
      line,
      hint: "convert it to UTF-8, e.g. `iconv -f latin1 -t utf-8`",
    });
  }
}

/** By extension; `.json` and `.jsonl` by content too, since JSON Lines files are often named `.json`. */
export function detectFileFormat(file: string, text: string): FileFormat {
  const extension = extname(file).toLowerCase();
  if (extension === ".csv") return "csv";
  const first = text.trimStart()[0];
  if (first === "[") return "json";
  if (first === "{") return "jsonl";
  const newline = text.indexOf("\n");
  const firstLine = newline < 0 ? text : text.slice(0, newline);
  if (extension !== ".json" && extension !== ".jsonl" && firstLine.includes(",")) return "csv";
  throw new LoratuneError("cannot tell the file's format: expected a JSON array, JSON Lines or CSV with a header row", {
    file,
    hint: "name the file .jsonl, .json or .csv, or give the file format explicitly",
  });
}

export function parseJsonl(text: string, file: string, onBadRow: BadRowHandler = rethrow): SourceRecord[] {
  const records: SourceRecord[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const lineText = lines[i]!;
    if (lineText.trim() === "") continue;
    const source = { file, line: i + 1 };
    let value: unknown;
    try {
      value = JSON.parse(lineText);
    } catch (error) {
      const hint = extname(file).toLowerCase() === ".json" && i === 0
        ? "a .json file must hold one JSON array of records, or one record per line"
        : undefined;
      onBadRow(new LoratuneError(`invalid JSON: ${(error as Error).message}`, { ...source, hint }));
      continue;
    }
    if (!isRecord(value)) {
      onBadRow(new LoratuneError(`expected a JSON object, got ${typeName(value)}`, source));
      continue;
    }
    records.push({ fields: value, source });
  }
  return records;
}

/**
 * A JSON array of objects. The array is split into its elements first (a scan aware of strings and
 * nesting), so each record knows the line it starts on and a syntax error names the record it is in.
 * Syntax errors are file-level: past one, the element boundaries cannot be trusted.
 * Records are indexed by their position in the array, bad ones included.
 */
export function parseJsonArray(text: string, file: string, onBadRow: BadRowHandler = rethrow): SourceRecord[] {
  const lineOf = lineLocator(text);
  const syntaxError = (message: string, offset: number) => new LoratuneError(message, { file, line: lineOf(offset) });
  let i = skipWhitespace(text, 0);
  if (text[i] !== "[") throw syntaxError("expected a JSON array of records", i);
  i = skipWhitespace(text, i + 1);
  const records: SourceRecord[] = [];
  let elements = 0;
  let closed = text[i] === "]";
  if (closed) i++;
  while (!closed) {
    const start = skipWhitespace(text, i);
    const end = scanJsonValue(text, start);
    const index = elements++;
    const elementText = text.slice(start, end);
    if (elementText.trim() === "") {
      throw syntaxError(`missing value for record index ${index} (a stray or trailing comma?)`, start);
    }
    let value: unknown;
    try {
      value = JSON.parse(elementText);
    } catch (error) {
      const message = (error as Error).message;
      const position = /at position (\d+)/.exec(message);
      throw syntaxError(`invalid JSON in record index ${index}: ${message}`, start + (position ? Number(position[1]) : 0));
    }
    const source = { file, line: lineOf(start), index };
    if (isRecord(value)) records.push({ fields: value, source });
    else onBadRow(new LoratuneError(`expected a JSON object for record index ${index}, got ${typeName(value)}`, source));
    if (end >= text.length) throw syntaxError("the array is not closed with ]", end);
    closed = text[end] === "]";
    i = end + 1;
  }
  const rest = skipWhitespace(text, i);
  if (rest < text.length) throw syntaxError("unexpected content after the array's closing ]", rest);
  if (elements === 0) throw new LoratuneError("the JSON array holds no records", { file });
  return records;
}

/** Offset of the `,` or `]` that ends the value starting at `start` at nesting depth 0, or text.length. */
function scanJsonValue(text: string, start: number): number {
  let depth = 0;
  for (let i = start; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      for (i++; i < text.length && text[i] !== '"'; i++) if (text[i] === "\\") i++;
    } else if (c === "{" || c === "[") {
      depth++;
    } else if (c === "}" || c === "]") {
      if (depth === 0) return i;
      depth--;
    } else if (c === "," && depth === 0) {
      return i;
    }
  }
  return text.length;
}

/**
 * RFC 4180 CSV with a header row: quoted fields may hold commas, newlines and doubled quotes; records
 * end with CRLF or LF; blank lines are skipped. A quote inside an unquoted field is kept as text.
 */
export function parseCsv(
  text: string,
  file: string,
  onBadRow: BadRowHandler = rethrow,
): { header: CsvHeader; records: SourceRecord[] } {
  const rows = splitCsvRows(text, file);
  const headerRow = rows[0]!;
  const header = { columns: headerRow.cells.map((name) => name.trim()), line: headerRow.line };
  const columns = header.columns;
  const seen = new Set<string>();
  for (const name of columns) {
    if (name === "") throw new LoratuneError("the header row has an empty column name", { file, line: header.line });
    if (seen.has(name)) throw new LoratuneError(`column "${name}" appears twice in the header row`, { file, line: header.line });
    seen.add(name);
  }
  if (rows.length === 1) throw new LoratuneError("the CSV file has a header row but no data rows", { file, line: header.line });
  const records: SourceRecord[] = [];
  for (const row of rows.slice(1)) {
    const source = { file, line: row.line };
    if (row.cells.length !== columns.length) {
      onBadRow(new LoratuneError(`the row has ${row.cells.length} fields but the header has ${columns.length}`, source));
      continue;
    }
    const fields: Record<string, unknown> = {};
    columns.forEach((name, k) => (fields[name] = row.cells[k]));
    records.push({ fields, source });
  }
  return { header, records };
}

export interface CsvHeader {
  columns: string[];
  line: number;
}

interface CsvRow {
  cells: string[];
  line: number;
}

function splitCsvRows(text: string, file: string): CsvRow[] {
  const rows: CsvRow[] = [];
  let i = 0;
  let line = 1;
  while (i < text.length) {
    if (text[i] === "\n" || (text[i] === "\r" && text[i + 1] === "\n")) {
      i += text[i] === "\r" ? 2 : 1;
      line++;
      continue;
    }
    const row: CsvRow = { cells: [], line };
    for (;;) {
      if (text[i] === '"') {
        const quoteLine = line;
        let value = "";
        i++;
        for (;;) {
          const quote = text.indexOf('"', i);
          if (quote < 0) throw new LoratuneError("a quoted field is never closed", { file, line: quoteLine });
          const chunk = text.slice(i, quote);
          value += chunk;
          line += countNewlines(chunk);
          if (text[quote + 1] === '"') {
            value += '"';
            i = quote + 2;
          } else {
            i = quote + 1;
            break;
          }
        }
        if (text[i] === "\r" && text[i + 1] === "\n") i++;
        if (i < text.length && text[i] !== "," && text[i] !== "\n") {
          throw new LoratuneError('unexpected text after a closing quote (write a quote inside a quoted field as "")', {
            file,
            line,
          });
        }
        row.cells.push(value);
      } else {
        let end = i;
        while (end < text.length && text[end] !== "," && text[end] !== "\n") end++;
        const terminatedByLineEnd = end === text.length || text[end] === "\n";
        const value = text.slice(i, end);
        row.cells.push(terminatedByLineEnd && value.endsWith("\r") ? value.slice(0, -1) : value);
        i = end;
      }
      if (i >= text.length) break;
      if (text[i] === ",") {
        i++;
        continue;
      }
      i++; // the "\n" ending the record
      line++;
      break;
    }
    rows.push(row);
  }
  return rows;
}

function countNewlines(text: string): number {
  let count = 0;
  for (let k = text.indexOf("\n"); k >= 0; k = text.indexOf("\n", k + 1)) count++;
  return count;
}

/** Maps a character offset to its 1-based line with a binary search over line starts. */
function lineLocator(text: string): (offset: number) => number {
  const lineStarts = [0];
  for (let k = text.indexOf("\n"); k >= 0; k = text.indexOf("\n", k + 1)) lineStarts.push(k + 1);
  return (offset) => {
    let low = 0;
    let high = lineStarts.length - 1;
    while (low < high) {
      const mid = (low + high + 1) >> 1;
      if (lineStarts[mid]! <= offset) low = mid;
      else high = mid - 1;
    }
    return low + 1;
  };
}

function skipWhitespace(text: string, offset: number): number {
  let i = offset;
  while (i < text.length && (text[i] === " " || text[i] === "\t" || text[i] === "\n" || text[i] === "\r")) i++;
  return i;
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** A value's JSON type, for error messages. */
export function typeName(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return typeof value === "object" ? "an object" : `a ${typeof value}`;
}
