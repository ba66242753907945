/** Helpers shared by the chat-like CLI commands (`vlm chat`, `vlm trace`). */
import { checkInputFile, checkRegularFile } from '../io/files';
import { ChatMessage, ContentPart } from '../models/chat';

/** One user turn: images, then a video, then the question — the order upstream chat uses. */
export function userTurnParts(prompt: string, images: string[], video?: string | string[]): ChatMessage[] {
  const videos = video === undefined ? [] : Array.isArray(video) ? video : [video];
  if (prompt.trim() === '') throw new Error('--prompt: the question is empty');
  for (const f of images) checkInputFile(f, 'image', '--image');
  for (const v of videos) checkRegularFile(v, '--video');
  const parts: ContentPart[] = images.map((image) => ({ type: 'image' as const, image }));
  for (const v of videos) parts.push({ type: 'video', video: v });
  parts.push({ type: 'text', text: prompt });
  return [{ role: 'user', content: parts }];
}
