/** Helpers shared by the chat-like CLI commands (`vlm chat`, `vlm trace`). */
import fs from 'node:fs';
import { ChatMessage, ContentPart } from '../models/chat';

/** One user turn: images, then a video, then the question — the order upstream chat uses. */
export function userTurnParts(prompt: string, images: string[], video?: string): ChatMessage[] {
  if (prompt.trim() === '') throw new Error('--prompt: the question is empty');
  for (const f of [...images, ...(video ? [video] : [])]) {
    if (!fs.existsSync(f)) throw new Error(`${f}: no such file`);
  }
  const parts: ContentPart[] = images.map((image) => ({ type: 'image' as const, image }));
  if (video) parts.push({ type: 'video', video });
  parts.push({ type: 'text', text: prompt });
  return [{ role: 'user', content: parts }];
}
