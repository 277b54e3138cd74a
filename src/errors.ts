// The one error type users see: a message naming the file (and line, field or tensor), plus an
// optional hint saying what to do. The CLI prints these without a stack trace and exits 1.

export interface ErrorWhere {
  file?: string;
  line?: number;
  field?: string;
  hint?: string;
}

export class LoratuneError extends Error {
  readonly file?: string;
  readonly line?: number;
  readonly field?: string;
  readonly hint?: string;

  constructor(message: string, where: ErrorWhere = {}) {
    const place = where.file ? `${where.file}${where.line !== undefined ? `:${where.line}` : ""}: ` : "";
    const field = where.field ? `${where.field}: ` : "";
    super(`${place}${field}${message}`);
    this.name = "LoratuneError";
    this.file = where.file;
    this.line = where.line;
    this.field = where.field;
    this.hint = where.hint;
  }
}
