// Writing files and folders so that a crash or a failed write never leaves a half-written one:
// everything is written under a temporary name, flushed, then renamed into place.
import fs from "node:fs";
import path from "node:path";
import { LoratuneError } from "../errors.js";

/** Writes `file` atomically and durably; a failure removes the temporary file and names `file`. */
export function writeFileAtomic(file: string, data: string | Uint8Array): void {
  const temp = `${file}.tmp-${unique()}`;
  try {
    writeFileDurably(temp, data);
    fs.renameSync(temp, file);
  } catch (e) {
    fs.rmSync(temp, { force: true });
    throw new LoratuneError(`cannot write: ${(e as Error).message}`, { file });
  }
}

/** Writes `file` and flushes it to disk. */
export function writeFileDurably(file: string, data: string | Uint8Array): void {
  const fd = fs.openSync(file, "w");
  try {
    fs.writeFileSync(fd, data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Copies `from` to `to` and flushes the copy to disk. */
export function copyFileDurably(from: string, to: string): void {
  fs.copyFileSync(from, to);
  const fd = fs.openSync(to, "r+");
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Flushes a folder's entries (renames) to disk; file systems that refuse fsync on folders are let be. */
export function fsyncDir(dir: string): void {
  let fd: number | null = null;
  try {
    fd = fs.openSync(dir, "r");
    fs.fsyncSync(fd);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== "EINVAL" && code !== "EISDIR" && code !== "EPERM" && code !== "ENOTSUP") throw e;
  } finally {
    if (fd !== null) fs.closeSync(fd);
  }
}

function unique(): string {
  return `${process.pid}-${Date.now().toString(36)}-${Math.floor(Math.random() * 2 ** 32).toString(36)}`;
}

/**
 * Builds a folder atomically: `fill` writes into a fresh temporary sibling folder, which then
 * replaces `dir` by rename. An existing `dir` is replaced only when it is empty or holds `marker`
 * (e.g. adapter_config.json), so a wrong path cannot wipe an unrelated folder. While the swap runs
 * the old folder sits at a hidden sibling path and is restored if the second rename fails.
 */
export function writeFolderAtomically(dir: string, marker: string, kind: string, fill: (temp: string) => void): void {
  const target = path.resolve(dir);
  const parent = path.dirname(target);
  const base = path.basename(target);
  let exists = false;
  try {
    const stat = fs.statSync(target);
    if (!stat.isDirectory()) throw new LoratuneError(`exists and is not a folder; refusing to replace it with ${kind}`, { file: dir });
    const names = fs.readdirSync(target);
    if (names.length > 0 && !names.includes(marker)) {
      throw new LoratuneError(`exists and is not ${kind} (it has no ${marker}); refusing to replace it`, {
        file: dir,
        hint: "choose a new or empty folder",
      });
    }
    exists = true;
  } catch (e) {
    if (e instanceof LoratuneError) throw e;
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw new LoratuneError(`cannot inspect: ${(e as Error).message}`, { file: dir });
  }
  try {
    fs.mkdirSync(parent, { recursive: true });
  } catch (e) {
    throw new LoratuneError(`cannot create the parent folder: ${(e as Error).message}`, { file: parent });
  }
  const temp = path.join(parent, `.${base}.tmp-${unique()}`);
  try {
    fs.mkdirSync(temp);
    fill(temp);
    fsyncDir(temp);
    if (!exists) {
      fs.renameSync(temp, target);
    } else {
      const old = path.join(parent, `.${base}.old-${unique()}`);
      fs.renameSync(target, old);
      try {
        fs.renameSync(temp, target);
      } catch (e) {
        fs.renameSync(old, target);
        throw e;
      }
      fs.rmSync(old, { recursive: true, force: true });
    }
    fsyncDir(parent);
  } catch (e) {
    fs.rmSync(temp, { recursive: true, force: true });
    if (e instanceof LoratuneError) throw e;
    throw new LoratuneError(`cannot write ${kind}: ${(e as Error).message}`, { file: dir });
  }
}

