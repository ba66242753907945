/**
 * `loadChatModel(dir)`: reads `DIR/config.json`, finds the family row for its `model_type` in the
 * family table (models/families.ts) and returns that family's chat pipeline (model, tokenizer and
 * processors loaded from the directory).
 */
import fs from 'node:fs';
import path from 'node:path';
import { readJson } from '../io/config';
import { ChatModel } from './chat';
import { ModelLoadOptions } from './contract';
import { FAMILIES, FamilyRow, rowForModelType } from './families';
import { attachAdapter } from '../training/run_extras';

export type Family = string;
export type LoadOptions = ModelLoadOptions;

/** The family row of a checkpoint directory, from config.json's `model_type`. */
export function familyOf(dir: string): FamilyRow {
  const file = path.join(dir, 'config.json');
  if (!fs.existsSync(dir)) throw new Error(`model directory ${dir} does not exist`);
  if (!fs.existsSync(file)) throw new Error(`model directory ${dir} has no config.json (expected a Hugging Face checkpoint directory)`);
  const t = readJson(file).model_type;
  const row = rowForModelType(t);
  if (!row) {
    throw new Error(`${file}: model_type ${JSON.stringify(t)} is not supported (supported: ${FAMILIES.flatMap((f) => f.modelTypes).join(', ')})`);
  }
  return row;
}

/** The family key of a checkpoint directory. */
export function detectFamily(dir: string): Family {
  return familyOf(dir).name;
}

/** Loads the chat pipeline of a checkpoint directory. */
export async function loadChatModel(dir: string, opts: LoadOptions = {}): Promise<ChatModel> {
  const row = familyOf(dir);
  const chat = await row.loadChat(dir, opts);
  if (opts.adapter) {
    try {
      attachAdapter(chat as unknown as Parameters<typeof attachAdapter>[0], opts.adapter, row.loraPreset().exclude);
    } catch (e) {
      chat.dispose();
      throw e;
    }
  }
  return chat;
}
