/**
 * model_type → family loader. `loadChatModel(dir)` reads `DIR/config.json` and returns the
 * family's chat pipeline (model, tokenizer and processors loaded from the directory).
 */
import fs from 'node:fs';
import path from 'node:path';
import { ChatModel } from './chat';
import { readJson } from './config_utils';

export type Family = 'minicpmv' | 'videollama2';

export interface LoadOptions {
  warn?: (msg: string) => void;
  /** VideoLLaMA2: directory of the vision tower when `mm_vision_tower` names a hub repo. */
  visionTowerDir?: string;
  /** A peft LoRA adapter directory, applied unmerged. */
  adapter?: string;
}

/** The family of a checkpoint directory, from config.json's `model_type`. */
export function detectFamily(dir: string): Family {
  const file = path.join(dir, 'config.json');
  if (!fs.existsSync(dir)) throw new Error(`--model: ${dir} does not exist`);
  if (!fs.existsSync(file)) throw new Error(`--model: ${dir} has no config.json (expected a Hugging Face checkpoint directory)`);
  const cfg = readJson(file);
  const t = cfg.model_type;
  if (t === 'minicpmv') return 'minicpmv';
  if (typeof t === 'string' && t.startsWith('videollama2')) return 'videollama2';
  throw new Error(`${file}: model_type ${JSON.stringify(t)} is not supported (supported: minicpmv, videollama2, videollama2_mistral, videollama2_qwen2)`);
}

/** Loads the chat pipeline of a checkpoint directory. */
export async function loadChatModel(dir: string, opts: LoadOptions = {}): Promise<ChatModel> {
  const family = detectFamily(dir);
  // required lazily: only the family in use is loaded
  let chat: ChatModel;
  if (family === 'minicpmv') {
    const { MiniCPMVChat } = require('./minicpmv/chat') as typeof import('./minicpmv/chat');
    chat = MiniCPMVChat.fromPretrained(dir, opts);
  } else {
    const { VideoLLaMA2Chat } = require('./videollama2/chat') as typeof import('./videollama2/chat');
    chat = await VideoLLaMA2Chat.fromPretrained(dir, opts);
  }
  if (opts.adapter) {
    const { attachAdapter } = require('./training/run_extras') as typeof import('./training/run_extras');
    try {
      attachAdapter(chat as unknown as Parameters<typeof attachAdapter>[0], opts.adapter);
    } catch (e) {
      chat.dispose();
      throw e;
    }
  }
  return chat;
}
