/** Shared bits of the server tests: fixture paths, a data URL, the CLI's greedy ids in-process. */
import fs from 'node:fs';
import path from 'node:path';
import { parseCommand } from '../../scripts/cli';
import { command as chat } from '../../scripts/chat';
import { fixture } from '../helpers/golden';
import { modelFixture } from '../helpers/fixtures';

export const MINICPM = modelFixture('minicpmv26_tiny')!;
export const VL2_QWEN = modelFixture('videollama2_siglip_qwen2_tiny')!;
export const VL2_MISTRAL = modelFixture('videollama2_clip_mistral_tiny')!;
export const IMAGE = fixture('preprocess', 'minicpmv26_tiny', 'input_image.png');
export const VIDEO = fixture('video', 'videollama2_siglip_qwen2_tiny_input_video.mp4');

export function dataUrl(file: string, mime: string): string {
  return `data:${mime};base64,${fs.readFileSync(file).toString('base64')}`;
}

/** `vlm chat --json ARGS` run in-process; the parsed JSON line. */
export async function cliChatJson(args: string[]): Promise<{ text: string; token_ids: number[]; prompt_tokens: number }> {
  const chunks: string[] = [];
  const spy = jest.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => {
    chunks.push(String(s));
    return true;
  });
  try {
    const { opts, positionals } = parseCommand(chat, [...args, '--json']);
    await chat.run(opts, positionals);
  } finally {
    spy.mockRestore();
  }
  return JSON.parse(chunks.join(''));
}

/** A PNG whose header claims width × height pixels (a decompression bomb: never decoded). */
export function pngHeaderOnly(width: number, height: number): Buffer {
  const { crc32 } = require('node:zlib') as { crc32?: (b: Buffer) => number };
  const crc = (buf: Buffer): number => {
    if (crc32) return crc32(buf);
    let c = ~0;
    for (const b of buf) {
      c ^= b;
      for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
    }
    return ~c >>> 0;
  };
  const chunk = (type: string, data: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const c = Buffer.alloc(4);
    c.writeUInt32BE(crc(td) >>> 0);
    return Buffer.concat([len, td, c]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  const idat = require('node:zlib').deflateSync(Buffer.alloc(1024));
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr), chunk('IDAT', idat), chunk('IEND', Buffer.alloc(0))]);
}

export const REPO = path.resolve(__dirname, '..', '..');
