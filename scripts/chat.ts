/**
 * `vlm chat --model DIR (--image FILE ... | --video FILE) --prompt TEXT [...] [--json]`
 * Streams the answer to stdout; with --json prints one object
 * {"text", "token_ids", "prompt_tokens", "timings"} instead.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ChatModel } from '../models/chat';
import { userTurnParts } from './chat_cli';
import { loadChatModel } from '../models/registry';
import { Command, ParsedOptions, UsageError, flag, num, requireStr, str, strList } from './cli';

export const MODEL_OPTIONS = {
  model: { type: 'string', arg: 'DIR', help: 'checkpoint directory (config.json, safetensors, tokenizer, preprocessor config)' },
  image: { type: 'string', multiple: true, arg: 'FILE', help: 'image file (PNG, JPEG, WebP)' },
  video: { type: 'string', multiple: true, arg: 'FILE', help: 'video file (decoded with ffmpeg; VideoLLaMA 2 takes one image or one video)' },
  prompt: { type: 'string', arg: 'TEXT', help: 'the question' },
  system: { type: 'string', arg: 'TEXT', help: 'system prompt' },
  'max-slice-nums': { type: 'string', arg: 'N', help: 'MiniCPM-V: slices per image (default from preprocessor_config.json; 2 for video)' },
  'num-frames': { type: 'string', arg: 'N', help: 'VideoLLaMA 2: frames sampled from a video (default: config num_frames)' },
  'vision-tower': { type: 'string', arg: 'DIR', help: 'VideoLLaMA 2: local directory of the vision tower named by mm_vision_tower' },
  quantize: { type: 'string', arg: 'Q', help: 'weight storage: f32 | stored (mapped as released) | f16 | bf16 | q8_0 | q4_0 (default: f32 when it fits the backend, else stored)' },
  adapter: { type: 'string', arg: 'DIR', help: 'a peft LoRA adapter directory (adapter_config.json + adapter_model.safetensors), applied unmerged' },
  'parse-special': {
    type: 'boolean',
    help: "parse chat-control tokens typed in --prompt/--system (<|im_start|>, </s>, ...) as control ids, as upstream does (default: they are plain text)",
  },
} as const;

/** Generation flags → options understood by both families' chat(). */
export function generationFlags(opts: ParsedOptions): Record<string, unknown> {
  const g: Record<string, unknown> = {};
  const greedy = flag(opts, 'greedy');
  const beams = num(opts, 'num-beams', { int: true, min: 1 });
  const sampling = ['temperature', 'top-p', 'top-k'].some((k) => str(opts, k) !== undefined);
  if (greedy && (beams !== undefined || sampling)) throw new UsageError('--greedy cannot be combined with --num-beams, --temperature, --top-p or --top-k');
  if (beams !== undefined && beams > 1 && sampling) throw new UsageError('--num-beams > 1 cannot be combined with sampling flags (--temperature, --top-p, --top-k)');
  g.maxNewTokens = num(opts, 'max-new-tokens', { int: true, min: 1 });
  g.repetitionPenalty = num(opts, 'repetition-penalty', { min: 0, exclusiveMin: true });
  g.temperature = num(opts, 'temperature', { min: 0, exclusiveMin: true });
  g.topP = num(opts, 'top-p', { min: 0, max: 1, exclusiveMin: true });
  g.topK = num(opts, 'top-k', { int: true, min: 0 });
  g.seed = num(opts, 'seed', { int: true, min: 0, max: Number.MAX_SAFE_INTEGER });
  if (greedy) g.greedy = true;
  if (beams !== undefined) {
    g.numBeams = beams;
    if (beams === 1) g.greedy = true;
    g.sampling = false;
  }
  if (sampling) {
    g.sampling = true;
    g.doSample = true;
  }
  if (flag(opts, 'parse-special')) g.parseSpecial = true;
  g.maxSliceNums = num(opts, 'max-slice-nums', { int: true, min: 1 });
  g.numFrames = num(opts, 'num-frames', { int: true, min: 1 });
  return Object.fromEntries(Object.entries(g).filter(([, v]) => v !== undefined));
}

/** Loads the model named by --model (with --vision-tower), as a usage error when it is missing. */
export async function modelFromFlags(opts: ParsedOptions): Promise<ChatModel> {
  const dir = requireStr(opts, 'model');
  // the library says "model directory …"; the CLI names the flag
  if (!fs.existsSync(dir)) throw new UsageError(`--model: ${dir} does not exist`);
  if (!fs.existsSync(path.join(dir, 'config.json'))) throw new UsageError(`--model: ${dir} has no config.json (expected a Hugging Face checkpoint directory)`);
  return loadChatModel(dir, {
    visionTowerDir: str(opts, 'vision-tower'),
    quantize: str(opts, 'quantize'),
    adapter: str(opts, 'adapter'),
    log: process.env.VLM_DEBUG === '1' ? (m) => process.stderr.write(`warning: ${m}\n`) : () => undefined,
  });
}

export const command: Command = {
  name: 'chat',
  summary: 'Ask a question about images or a video (streams the answer; --json for one JSON object).',
  usage: '--model DIR (--image FILE [--image FILE ...] | --video FILE) --prompt TEXT [--system TEXT] [--max-new-tokens N] ' +
    '[--greedy | --num-beams K] [--repetition-penalty R] [--temperature T --top-p P --top-k K --seed S] [--max-slice-nums N] [--num-frames N] [--json]',
  options: {
    ...MODEL_OPTIONS,
    'max-new-tokens': { type: 'string', arg: 'N', help: 'tokens to generate at most (default 2048)' },
    greedy: { type: 'boolean', help: 'greedy decoding (1 beam, no sampling, no repetition penalty)' },
    'num-beams': { type: 'string', arg: 'K', help: 'beam search with K beams' },
    'repetition-penalty': { type: 'string', arg: 'R', help: 'HF repetition penalty (> 0)' },
    temperature: { type: 'string', arg: 'T', help: 'sampling temperature (> 0)' },
    'top-p': { type: 'string', arg: 'P', help: 'nucleus sampling (0, 1]' },
    'top-k': { type: 'string', arg: 'K', help: 'top-k sampling (0 = off)' },
    seed: { type: 'string', arg: 'S', help: 'sampling seed: an integer in [0, 2^53 - 1] (same seed, same answer)' },
    json: { type: 'boolean', help: 'print one JSON object {"text", "token_ids", "prompt_tokens", "timings"}' },
  },
  async run(opts) {
    const prompt = requireStr(opts, 'prompt');
    const images = strList(opts, 'image');
    const video = strList(opts, 'video');
    const gen = generationFlags(opts);
    const json = flag(opts, 'json');
    const tLoad = performance.now();
    const model = await modelFromFlags(opts);
    const loadMs = Math.round((performance.now() - tLoad) * 10) / 10;
    try {
      const messages = userTurnParts(prompt, images, video);
      const r = await model.chat(messages, {
        ...gen,
        system: str(opts, 'system'),
        onText: json ? undefined : (t) => process.stdout.write(t),
      });
      if (json) {
        process.stdout.write(JSON.stringify({
          text: r.text, token_ids: r.tokenIds, prompt_tokens: r.promptTokens, finish_reason: r.finishReason,
          timings: { load_ms: loadMs, ...r.timings },
        }) + '\n');
      } else {
        process.stdout.write('\n');
      }
    } finally {
      model.dispose();
    }
    return 0;
  },
};
