/**
 * `vlm preprocess` contract: option names, the safetensors it writes (pixel_values.<i>,
 * tgt_sizes), the single JSON object of --json, and the bad-argument / bad-file paths (clear
 * message, exit code 2, no output file left behind).
 */
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { UsageError, parseCommand } from '../../scripts/cli';
import { command } from '../../scripts/preprocess';
import { REPO_ROOT, fixture, readAll } from '../helpers/golden';

const MODEL = fixture('preprocess', 'minicpmv26');
const ASTRONAUT = path.join(MODEL, 'astronaut.webp');
const golden = JSON.parse(fs.readFileSync(path.join(MODEL, 'golden.json'), 'utf8')).images.astronaut.real448;
const sha = (x: Float32Array | string): string =>
  crypto.createHash('sha256').update(typeof x === 'string' ? Buffer.from(x) : Buffer.from(x.buffer, x.byteOffset, x.byteLength)).digest('hex');

let tmp: string;
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vlm-preprocess-'));
});
afterEach(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
  jest.restoreAllMocks();
});

/** Runs the command in-process; returns what it printed on stdout. */
async function run(args: string[]): Promise<string> {
  const chunks: string[] = [];
  jest.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => {
    chunks.push(String(s));
    return true;
  });
  const { opts, positionals } = parseCommand(command, args);
  await command.run(opts, positionals);
  jest.restoreAllMocks();
  return chunks.join('');
}

describe('vlm preprocess', () => {
  it('writes pixel_values.<i> and tgt_sizes equal to the upstream goldens, and --json prints one object', async () => {
    const out = path.join(tmp, 'astronaut.safetensors');
    const stdout = await run(['--model', MODEL, '--image', ASTRONAUT, '--out', out, '--json']);
    expect(stdout.endsWith('\n')).toBe(true);
    expect(stdout.trim().split('\n')).toHaveLength(1);
    const j = JSON.parse(stdout);
    expect(Object.keys(j)).toEqual(['sliced_grid', 'tgt_sizes', 'placeholder']);
    expect(j.sliced_grid).toEqual(golden.sliced_grid);
    expect(j.tgt_sizes).toEqual(golden.tgt_sizes);
    expect(sha(j.placeholder)).toBe(golden.placeholder_sha256);
    expect(j.placeholder.startsWith('<image_id>0</image_id><image>')).toBe(true);

    const t = readAll(out);
    expect(Object.keys(t)).toEqual(['pixel_values.0', 'pixel_values.1', 'pixel_values.2', 'tgt_sizes']);
    for (let i = 0; i < 3; i++) {
      expect(t[`pixel_values.${i}`].dtype).toBe('float32');
      expect(t[`pixel_values.${i}`].shape).toEqual(golden.pixel_values_shapes[i]);
      expect(sha(t[`pixel_values.${i}`].data as Float32Array)).toBe(golden.pixel_values_sha256_f32le[i]);
    }
    expect(t.tgt_sizes.shape).toEqual([3, 2]);
    expect(Array.from(t.tgt_sizes.data)).toEqual(golden.tgt_sizes.flat());
    expect(fs.readdirSync(tmp)).toEqual(['astronaut.safetensors']);
  });

  it('--max-slice-nums overrides the config; without --json a one-line summary is printed', async () => {
    const out = path.join(tmp, 'one.safetensors');
    const stdout = await run(['--model', MODEL, '--image', ASTRONAUT, '--out', out, '--max-slice-nums', '1']);
    expect(stdout).toMatch(/astronaut\.webp: 512x512, not sliced, 1 image\(s\) \(tgt_sizes \[\[32,32\]\]\) -> .*one\.safetensors\n$/);
    expect(Object.keys(readAll(out))).toEqual(['pixel_values.0', 'tgt_sizes']);
  });

  it('rejects bad --max-slice-nums and missing options, naming the option', async () => {
    const out = path.join(tmp, 'x.safetensors');
    const base = ['--model', MODEL, '--image', ASTRONAUT, '--out', out];
    await expect(run([...base, '--max-slice-nums', '0'])).rejects.toThrow('--max-slice-nums: must be >= 1, got 0');
    await expect(run([...base, '--max-slice-nums', 'abc'])).rejects.toThrow(`--max-slice-nums: expected an integer, got 'abc'`);
    await expect(run([...base, '--max-slice-nums', '2.5'])).rejects.toThrow(`--max-slice-nums: expected an integer, got '2.5'`);
    await expect(run(['--image', ASTRONAUT, '--out', out])).rejects.toThrow('--model is required');
    await expect(run(['--model', MODEL, '--out', out])).rejects.toThrow('--image is required');
    await expect(run(['--model', MODEL, '--image', ASTRONAUT])).rejects.toThrow('--out is required');
    await expect(run([...base, '--slices', '3'])).rejects.toThrow(UsageError);
    expect(fs.readdirSync(tmp)).toEqual([]);
  });

  it('a missing config, a bad image or a bad --out directory: clear error and no output file', async () => {
    const out = path.join(tmp, 'x.safetensors');
    const mdir = path.join(tmp, 'model'); // --out may not lie inside the model directory
    fs.mkdirSync(mdir);
    const cfg = path.join(mdir, 'preprocessor_config.json');
    await expect(run(['--model', mdir, '--image', ASTRONAUT, '--out', out])).rejects.toThrow(`${cfg}: cannot read the image processor config (ENOENT)`);
    fs.writeFileSync(cfg, '{"scale_resolution": "448"}');
    await expect(run(['--model', mdir, '--image', ASTRONAUT, '--out', out])).rejects.toThrow(`${cfg}: 'scale_resolution' must be an integer > 0, got "448"`);
    fs.rmSync(mdir, { recursive: true });
    const notImage = path.join(tmp, 'photo.png');
    fs.writeFileSync(notImage, 'hello');
    const err = await run(['--model', MODEL, '--image', notImage, '--out', out]).catch((e) => e);
    expect(err).toBeInstanceOf(UsageError);
    expect(err.message).toMatch(/photo\.png: cannot read the image: .*unsupported image format/);
    await expect(run(['--model', MODEL, '--image', path.join(tmp, 'nope.jpg'), '--out', out])).rejects.toThrow(`${path.join(tmp, 'nope.jpg')}: no such file`);
    await expect(run(['--model', MODEL, '--image', ASTRONAUT, '--out', path.join(tmp, 'no', 'dir', 'x.safetensors')])).rejects.toThrow(`--out: directory ${path.join(tmp, 'no', 'dir')} does not exist`);
    await expect(run(['--model', MODEL, '--image', ASTRONAUT, '--out', tmp])).rejects.toThrow(`--out: ${tmp} is a directory`);
    expect(fs.readdirSync(tmp)).toEqual(['photo.png']);
  });

  it('end to end through bin: stdout is exactly the JSON object; errors exit with code 2', () => {
    const tsx = path.join(REPO_ROOT, 'node_modules', '.bin', 'tsx');
    const vlm = path.join(REPO_ROOT, 'scripts', 'vlm.ts');
    const out = path.join(tmp, 'e2e.safetensors');
    const stdout = execFileSync(tsx, [vlm, 'preprocess', '--model', MODEL, '--image', path.join(MODEL, 'synthetic_tiny_30x18.webp'), '--out', out, '--json'], { encoding: 'utf8', timeout: 120000 });
    expect(JSON.parse(stdout)).toEqual({ sliced_grid: null, tgt_sizes: [[25, 41]], placeholder: `<image_id>0</image_id><image>${'<unk>'.repeat(64)}</image>` });
    let status = 0, stderr = '';
    try {
      execFileSync(tsx, [vlm, 'preprocess', '--model', MODEL, '--image', ASTRONAUT, '--out', out, '--max-slice-nums=-3'], { encoding: 'utf8', stdio: 'pipe', timeout: 120000 });
    } catch (e) {
      status = (e as { status: number }).status;
      stderr = String((e as { stderr: string }).stderr);
    }
    expect(status).toBe(2);
    expect(stderr).toBe('vlm: error: --max-slice-nums: must be >= 1, got -3\n');
  });
});
