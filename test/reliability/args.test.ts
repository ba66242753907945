/**
 * Reliability items 7, 8 and 11, plus a table-driven probe of bad images, videos and flags:
 * every outcome is a clear message with the documented exit code (2 = bad arguments or input
 * files, 1 = runtime failure).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { Command, exitCodeFor, parseCommand } from '../../scripts/cli';
import { command as chat, generationFlags } from '../../scripts/chat';
import { command as trace } from '../../scripts/trace';
import { command as preprocess } from '../../scripts/preprocess';
import { command as finetuneCmd } from '../../scripts/finetune';
import { Rng } from '../../generation/sampling';
import { resolveGenerationConfig } from '../../generation/config';
import { loadImage } from '../../media/image';
import { loadChatModel } from '../../models/registry';
import { ChatModel } from '../../models/chat';
import { fixture } from '../helpers/golden';
import { modelFixture } from '../helpers/fixtures';

const VQ = modelFixture('videollama2_siglip_qwen2_tiny')!;
const MC = modelFixture('minicpmv26_tiny')!;
const VIDEO = fixture('video', 'videollama2_siglip_qwen2_tiny_input_video.mp4');
const PP_MODEL = fixture('preprocess', 'minicpmv26');
const IMG = path.join(PP_MODEL, 'synthetic_tiny_30x18.webp');

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vlm-rel-args-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

async function run(cmd: Command, args: string[]): Promise<string> {
  const chunks: string[] = [];
  jest.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => {
    chunks.push(String(s));
    return true;
  });
  jest.spyOn(process.stderr, 'write').mockImplementation(() => true);
  try {
    const { opts, positionals } = parseCommand(cmd, args);
    await cmd.run(opts, positionals);
  } finally {
    jest.restoreAllMocks();
  }
  return chunks.join('');
}

/** A genuine 2x2 24-bit BMP. */
function bmp(): Buffer {
  const row = Buffer.from([0, 0, 255, 0, 255, 0, 0, 0]); // 2 pixels + 2 bytes padding
  const pixels = Buffer.concat([row, row]);
  const h = Buffer.alloc(54);
  h.write('BM', 0, 'latin1');
  h.writeUInt32LE(54 + pixels.length, 2);
  h.writeUInt32LE(54, 10);
  h.writeUInt32LE(40, 14);
  h.writeInt32LE(2, 18);
  h.writeInt32LE(2, 22);
  h.writeUInt16LE(1, 26);
  h.writeUInt16LE(24, 28);
  h.writeUInt32LE(pixels.length, 34);
  return Buffer.concat([h, pixels]);
}

describe('7. VideoLLaMA 2: two videos are refused like two images', () => {
  let model: ChatModel;
  beforeAll(async () => {
    model = await loadChatModel(VQ);
  });
  afterAll(() => model.dispose());

  it('API: two video parts', async () => {
    await expect(model.chat([{ role: 'user', content: [{ type: 'video', video: VIDEO }, { type: 'video', video: VIDEO }, { type: 'text', text: 'what?' }] }], { maxNewTokens: 1 }))
      .rejects.toThrow(/one image or one video per conversation/);
  });

  it('CLI: --video given twice (chat and trace)', async () => {
    await expect(run(chat, ['--model', VQ, '--video', VIDEO, '--video', VIDEO, '--prompt', 'what?', '--max-new-tokens', '1', '--greedy']))
      .rejects.toThrow(/one image or one video per conversation/);
    await expect(run(trace, ['--model', VQ, '--video', VIDEO, '--video', VIDEO, '--prompt', 'what?', '--out', path.join(tmp, 't.safetensors')]))
      .rejects.toThrow(/one image or one video per conversation/);
    expect(fs.existsSync(path.join(tmp, 't.safetensors'))).toBe(false);
  });
});

describe('8. seeds: integers in [0, 2^53 - 1], distinct seeds give distinct streams', () => {
  const stream = (seed: number) => {
    const r = new Rng(seed);
    return Array.from({ length: 8 }, () => r.nextU32());
  };
  it('2^32 and 0, 2^52 + 1 and 1 differ; the same seed repeats', () => {
    expect(stream(4294967296)).not.toEqual(stream(0));
    expect(stream(2 ** 52 + 1)).not.toEqual(stream(1));
    expect(stream(Number.MAX_SAFE_INTEGER)).not.toEqual(stream(Number.MAX_SAFE_INTEGER - 2 ** 32));
    expect(stream(12345)).toEqual(stream(12345));
    const seen = new Set<string>();
    for (let k = 0; k < 64; k++) seen.add(stream(k * 4294967296 + 7).join());
    expect(seen.size).toBe(64);
  });
  it('-1, 1.5, 2^53 and 1e30 are refused by the API and the CLI', () => {
    for (const bad of [-1, 1.5, 2 ** 53, 1e30, NaN]) {
      expect(() => new Rng(bad)).toThrow(/seed must be an integer in \[0, 9007199254740991\]/);
      expect(() => resolveGenerationConfig({ seed: bad })).toThrow(/seed: must be an integer in \[0, 2\^53 - 1\]/);
    }
    const flags = (args: string[]) => generationFlags(parseCommand(chat, args).opts);
    expect(() => flags(['--seed', '-1'])).toThrow('--seed: must be >= 0, got -1');
    expect(() => flags(['--seed', '1e30'])).toThrow(/--seed: must be <= 9007199254740991/);
    expect(() => flags(['--seed', '9007199254740992'])).toThrow(/--seed: must be <= 9007199254740991/);
    expect(flags(['--seed', '4294967296']).seed).toBe(4294967296);
    expect(() => parseCommand(finetuneCmd, ['--seed', '-1'])).not.toThrow();
  });
});

describe('11. messages and exit codes', () => {
  it('negative values after a space reach our validation', () => {
    const flags = (args: string[]) => generationFlags(parseCommand(chat, args).opts);
    expect(() => flags(['--top-k', '-3'])).toThrow('--top-k: must be >= 0, got -3');
    expect(() => flags(['--temperature', '-1'])).toThrow('--temperature: must be > 0, got -1');
    expect(() => flags(['--max-new-tokens', '-5'])).toThrow('--max-new-tokens: must be >= 1, got -5');
    expect(() => flags(['--top-p', '-.5'])).toThrow('--top-p: must be > 0, got -0.5');
  });

  it('the same unreadable image exits 2 from preprocess, chat and trace', async () => {
    const bad = path.join(tmp, 'bad.png');
    fs.writeFileSync(bad, 'not an image');
    const codes: number[] = [];
    for (const [cmd, args] of [
      [preprocess, ['--model', PP_MODEL, '--image', bad, '--out', path.join(tmp, 'p.safetensors')]],
      [chat, ['--model', MC, '--image', bad, '--prompt', 'x', '--max-new-tokens', '1']],
      [trace, ['--model', MC, '--image', bad, '--prompt', 'x', '--out', path.join(tmp, 'q.safetensors')]],
    ] as [Command, string[]][]) {
      const e = await run(cmd, args).catch((x) => x);
      expect(e.message).toMatch(/bad\.png/);
      codes.push(exitCodeFor(e));
    }
    expect(codes).toEqual([2, 2, 2]);
    expect(exitCodeFor(new Error('internal'))).toBe(1);
  });

  it('a genuine BMP is said plainly to be unsupported', async () => {
    const f = path.join(tmp, 'x.bmp');
    fs.writeFileSync(f, bmp());
    await expect(loadImage(f)).rejects.toThrow(/x\.bmp: BMP images are not supported \(supported: png, jpeg, webp, gif, tiff\)/);
    await expect(loadImage(f)).rejects.not.toThrow(/despite/);
  });
});

describe('probe table: bad images, videos and flags give clear errors with exit code 2', () => {
  const fifo = () => {
    const p = path.join(tmp, `p${Math.random().toString(16).slice(2)}.fifo`);
    execFileSync('mkfifo', [p]);
    return p;
  };
  const write = (name: string, data: string | Buffer) => {
    const p = path.join(tmp, name);
    fs.writeFileSync(p, data);
    return p;
  };
  const png = fs.readFileSync(fixture('preprocess', 'minicpmv26', 'synthetic_tiny_30x18.webp'));
  const imageCases: [string, () => string, RegExp][] = [
    ['missing', () => path.join(tmp, 'none.png'), /no such file/],
    ['empty', () => write('empty.png', ''), /empty file/],
    ['text', () => write('text.jpg', 'hello'), /not a known image format/],
    ['truncated', () => write('trunc.webp', png.subarray(0, 40)), /image/],
    ['BMP', () => write('b.bmp', bmp()), /BMP images are not supported/],
    ['directory', () => tmp, /is a directory/],
    ['FIFO', fifo, /FIFO/],
    ['/dev/zero', () => '/dev/zero', /character device/],
  ];
  for (const [label, make, re] of imageCases) {
    it(`image: ${label}`, async () => {
      const f = make();
      const e = await run(chat, ['--model', MC, '--image', f, '--prompt', 'x', '--max-new-tokens', '1']).catch((x) => x);
      expect(e).toBeInstanceOf(Error);
      expect(e.message).toMatch(re);
      expect(e.message).toContain(f);
      expect(exitCodeFor(e)).toBe(2);
    });
  }
  const videoCases: [string, () => string, RegExp][] = [
    ['missing', () => path.join(tmp, 'none.mp4'), /no such file/],
    ['directory', () => tmp, /directory/],
    ['FIFO', fifo, /FIFO/],
    ['/dev/zero', () => '/dev/zero', /character device/],
    ['text', () => write('v.mp4', 'not a video'), /./],
  ];
  for (const [label, make, re] of videoCases) {
    it(`video: ${label}`, async () => {
      const f = make();
      const e = await run(chat, ['--model', VQ, '--video', f, '--prompt', 'x', '--max-new-tokens', '1']).catch((x) => x);
      expect(e.message).toMatch(re);
      expect(e.message).toContain(f);
      expect(exitCodeFor(e)).toBe(2);
    });
  }
  const flagCases: [string[], RegExp][] = [
    [['--top-k', '1.5'], /--top-k: expected an integer/],
    [['--top-p', '2'], /--top-p: must be <= 1/],
    [['--num-beams', '0'], /--num-beams: must be >= 1/],
    [['--seed', 'abc'], /--seed: expected an integer/],
    [['--seed', '-0x10'], /--seed: expected an integer|--seed: must be >= 0/],
    [['--max-new-tokens', 'Infinity'], /--max-new-tokens: expected an integer/],
    [['--temperature', '-inf'], /--temperature: expected a number/],
    [['--greedy', '--top-k', '3'], /--greedy cannot be combined/],
    [['--bogus'], /Unknown option '--bogus'/],
  ];
  for (const [args, re] of flagCases) {
    it(`flags: ${args.join(' ')}`, () => {
      let err: unknown;
      try {
        generationFlags(parseCommand(chat, args).opts);
      } catch (e) {
        err = e;
      }
      expect((err as Error).message).toMatch(re);
      expect(exitCodeFor(err)).toBe(2);
    });
  }
});

describe('11. wasm start-up under a limited address space', () => {
  const entry = path.join(__dirname, '..', '..', 'dist', 'scripts', 'vlm.js');
  (fs.existsSync(entry) ? it : it.skip)('ulimit -v: one clear line (an error with --backend wasm, a note and the cpu backend otherwise)', () => {
    const vlm = path.join(__dirname, '..', '..', 'bin', 'vlm.js');
    const runLimited = (args: string) => require('node:child_process').spawnSync('bash', ['-c', `ulimit -v 8000000; exec node ${vlm} ${args}`], { encoding: 'utf8', timeout: 120000, env: { ...process.env, VLM_BACKEND: '' } });
    const r = runLimited('--version --backend wasm');
    if (r.status === 0) return; // wasm fits in this address-space limit on this machine: nothing to check
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split('\n')).toEqual([expect.stringMatching(/^vlm: error: the wasm backend failed to initialize: .*Out of memory.*ulimit -v/)]);
    expect(r.stderr).not.toMatch(/RuntimeError|Aborted|    at /);
    const a = runLimited(`chat --model ${MC} --image ${IMG} --prompt hi --max-new-tokens 2 --greedy`);
    expect(a.status).toBe(0);
    expect(a.stderr.trim().split('\n')).toEqual([expect.stringMatching(/^vlm: note: wasm failed: .*; using the cpu backend$/)]);
  });
});
