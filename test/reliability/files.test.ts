/**
 * Reliability items 1–5: outputs never replace devices/FIFOs or inputs, finetune checks --out
 * before training (and respects the umask and an existing directory), in-flight temporaries are
 * removed on SIGINT/SIGTERM and errors, and every file input is a bounded read of a regular file.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { FileInputError, readBounded, trackedTemps } from '../../io/files';
import { Command, exitCodeFor, parseCommand } from '../../scripts/cli';
import { command as preprocess } from '../../scripts/preprocess';
import { command as trace } from '../../scripts/trace';
import { command as tokenize } from '../../scripts/tokenize';
import { command as chat } from '../../scripts/chat';
import { finetune } from '../../training/finetune';
import { loadImage } from '../../media/image';
import { readJson } from '../../io/config';
import { readDataFile } from '../../training/data';
import { REPO_ROOT, fixture } from '../helpers/golden';
import { modelFixture } from '../helpers/fixtures';
import { trainFixture } from '../training/helpers';

const PP_MODEL = fixture('preprocess', 'minicpmv26');
const TINY_IMG = path.join(PP_MODEL, 'synthetic_tiny_30x18.webp');
const MC = modelFixture('minicpmv26_tiny')!;
const isRoot = process.getuid?.() === 0;

let tmp: string;
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vlm-rel-files-'));
});
afterEach(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
  jest.restoreAllMocks();
});

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

const noTemps = (dir: string) => expect(fs.readdirSync(dir).filter((f) => f.startsWith('.'))).toEqual([]);

describe('1. outputs that are devices or FIFOs are written through, never replaced', () => {
  it('preprocess --out FIFO: the FIFO stays a FIFO and its reader gets the safetensors bytes', async () => {
    const fifo = path.join(tmp, 'out.fifo');
    execFileSync('mkfifo', [fifo]);
    const sink = path.join(tmp, 'sink.bin');
    const reader = spawn('sh', ['-c', `cat "${fifo}" > "${sink}"`]);
    const done = new Promise((r) => reader.on('exit', r));
    await run(preprocess, ['--model', PP_MODEL, '--image', TINY_IMG, '--out', fifo]);
    await done;
    expect(fs.statSync(fifo).isFIFO()).toBe(true);
    expect(fs.readFileSync(sink).length).toBeGreaterThan(100);
    noTemps(tmp);
  });

  (isRoot ? it : it.skip)('preprocess --out <a null character device in a sandbox dir>: still a device afterwards', async () => {
    const dev = path.join(tmp, 'null'); // a stand-in for /dev/null (same major/minor), never the real /dev
    const r = spawnSync('mknod', [dev, 'c', '1', '3']);
    if (r.status !== 0) return; // no mknod rights in this container
    await run(preprocess, ['--model', PP_MODEL, '--image', TINY_IMG, '--out', dev]);
    expect(fs.statSync(dev).isCharacterDevice()).toBe(true);
    noTemps(tmp);
  });
});

describe('2. an --out that is an input, or inside the model directory, is refused before any work', () => {
  it('preprocess: the input image itself, a symlink and a hard link to it, and the model config', async () => {
    const img = path.join(tmp, 'x.webp');
    fs.copyFileSync(TINY_IMG, img);
    const before = fs.readFileSync(img);
    fs.symlinkSync(img, path.join(tmp, 'link.webp'));
    fs.linkSync(img, path.join(tmp, 'hard.webp'));
    for (const out of [img, path.join(tmp, 'link.webp'), path.join(tmp, 'hard.webp')]) {
      const e = await run(preprocess, ['--model', PP_MODEL, '--image', img, '--out', out]).catch((x) => x);
      expect(e).toBeInstanceOf(FileInputError);
      expect(e.message).toMatch(/^--out: .* is the input file/);
      expect(exitCodeFor(e)).toBe(2);
    }
    expect(fs.readFileSync(img).equals(before)).toBe(true);
    const model = path.join(tmp, 'model');
    fs.cpSync(PP_MODEL, model, { recursive: true });
    const cfg = path.join(model, 'preprocessor_config.json');
    const cfgBefore = fs.readFileSync(cfg, 'utf8');
    await expect(run(preprocess, ['--model', model, '--image', TINY_IMG, '--out', cfg])).rejects.toThrow(/--out: .*lies inside the input directory/);
    expect(fs.readFileSync(cfg, 'utf8')).toBe(cfgBefore);
  });

  it('trace --out MODEL/model.safetensors is refused before the model is loaded', async () => {
    const model = path.join(tmp, 'mc');
    fs.cpSync(MC, model, { recursive: true });
    const ck = path.join(model, 'model.safetensors');
    const st = fs.statSync(ck);
    const t0 = Date.now();
    await expect(run(trace, ['--model', model, '--image', TINY_IMG, '--prompt', 'hi', '--out', ck])).rejects.toThrow(/--out: .*lies inside the input directory/);
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(fs.statSync(ck).mtimeMs).toBe(st.mtimeMs);
  });

  it('trace --out into a missing directory names --out, not a temporary path', async () => {
    const out = path.join(tmp, 'no', 'x.safetensors');
    const e = await run(trace, ['--model', MC, '--image', TINY_IMG, '--prompt', 'hi', '--out', out]).catch((x) => x);
    expect(e.message).toBe(`--out: directory ${path.join(tmp, 'no')} does not exist`);
    expect(e.message).not.toMatch(/\.tmp/);
  });
});

describe('3. finetune checks --out before the first step', () => {
  const vq = trainFixture('videollama2_siglip_qwen2_tiny');
  it('an unwritable --out fails first, naming --out; nothing trained', async () => {
    let unwritable: string;
    if (isRoot) {
      unwritable = '/sys/vlm-reliability-test/out'; // sysfs refuses mkdir, even for root
    } else {
      fs.mkdirSync(path.join(tmp, 'ro'), { mode: 0o555 });
      unwritable = path.join(tmp, 'ro', 'out');
    }
    const onStep = jest.fn();
    await expect(finetune({ model: vq.model, data: vq.data, dataRoot: vq.dataRoot, out: unwritable, maxSteps: 1, onStep }))
      .rejects.toThrow(/^--out: cannot create .*not writable or cannot be created/);
    expect(onStep).not.toHaveBeenCalled();
    await expect(finetune({ model: vq.model, data: vq.data, dataRoot: vq.dataRoot, out: path.join(vq.model, 'sub'), maxSteps: 1, onStep }))
      .rejects.toThrow(/--out: .* lies inside the input directory/);
  });

  it('the output directory gets the umask mode; an existing empty directory keeps its mode; no staging left', async () => {
    const old = process.umask(0o022);
    try {
      const out = path.join(tmp, 'new', 'ft');
      await finetune({ model: vq.model, data: vq.data, dataRoot: vq.dataRoot, out, maxSteps: 1, tune: ['mm_projector'] });
      expect(fs.statSync(out).mode & 0o777).toBe(0o755);
      const existing = path.join(tmp, 'existing');
      fs.mkdirSync(existing, { mode: 0o750 });
      fs.chmodSync(existing, 0o750);
      await finetune({ model: vq.model, data: vq.data, dataRoot: vq.dataRoot, out: existing, maxSteps: 1, tune: ['mm_projector'] });
      expect(fs.statSync(existing).mode & 0o777).toBe(0o750);
      expect(fs.existsSync(path.join(existing, 'model.safetensors'))).toBe(true);
    } finally {
      process.umask(old);
    }
    noTemps(tmp);
    noTemps(path.join(tmp, 'new'));
    expect(trackedTemps()).toEqual([]);
  });

  it('a failing training run removes its staging directory', async () => {
    const out = path.join(tmp, 'ft2');
    await expect(finetune({ model: vq.model, data: vq.data, dataRoot: vq.dataRoot, out, maxSteps: 1, tune: ['no_such_part'] })).rejects.toThrow();
    expect(fs.readdirSync(tmp)).toEqual([]);
    expect(trackedTemps()).toEqual([]);
  });
});

describe('4. in-flight temporaries are removed on SIGINT/SIGTERM', () => {
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    it(`${sig} between write and rename: no temporary left, and the process dies of ${sig}`, () => {
      const script = path.join(tmp, 'child.ts');
      fs.writeFileSync(script, `
        import fs from 'node:fs';
        import { trackTemp, makeTempDirNear } from ${JSON.stringify(path.join(REPO_ROOT, 'io', 'files'))};
        const f = ${JSON.stringify(path.join(tmp, '.out.safetensors.123.tmp'))};
        trackTemp(f);
        fs.writeFileSync(f, Buffer.alloc(1 << 20));
        const d = makeTempDirNear(${JSON.stringify(path.join(tmp, 'ft'))});
        fs.writeFileSync(d + '/model.safetensors', 'x');
        process.kill(process.pid, '${sig}');
        setTimeout(() => process.exit(0), 5000);
      `);
      const r = spawnSync(process.execPath, ['--import', 'tsx', script], { cwd: REPO_ROOT, timeout: 60000 });
      expect(r.signal).toBe(sig);
      expect(fs.readdirSync(tmp)).toEqual(['child.ts']);
    });
  }
});

describe('5. file inputs: regular files only, bounded', () => {
  it('FIFOs and character devices are refused without blocking, naming the file', async () => {
    const fifo = path.join(tmp, 'in.fifo');
    execFileSync('mkfifo', [fifo]);
    expect(() => readBounded(fifo, 'config')).toThrow(/in\.fifo: is a FIFO \(named pipe\), not a regular file/);
    await expect(loadImage(fifo)).rejects.toThrow(/in\.fifo: is a FIFO/);
    await expect(loadImage('/dev/zero')).rejects.toThrow(/\/dev\/zero: is a character device/);
    expect(() => readJson(fifo)).toThrow(/in\.fifo/);
    expect(() => readDataFile(fifo)).toThrow(/in\.fifo.*FIFO/);
    await expect(run(tokenize, ['--model', MC, '--file', '/dev/zero'])).rejects.toThrow(/\/dev\/zero: is a character device/);
    await expect(run(chat, ['--model', MC, '--image', '/dev/zero', '--prompt', 'x'])).rejects.toThrow(/--image: \/dev\/zero: is a character device/);
    // a config.json that is a FIFO
    const model = path.join(tmp, 'm');
    fs.mkdirSync(model);
    for (const f of fs.readdirSync(MC)) if (f !== 'config.json') fs.symlinkSync(path.join(MC, f), path.join(model, f));
    execFileSync('mkfifo', [path.join(model, 'config.json')]);
    await expect(run(chat, ['--model', model, '--image', TINY_IMG, '--prompt', 'x'])).rejects.toThrow(/config\.json.*FIFO/);
  });

  it('size limits per kind, overridable by environment variables', async () => {
    const big = path.join(tmp, 'big.json');
    fs.writeFileSync(big, JSON.stringify({ a: 'x'.repeat(2000) }));
    process.env.VLM_MAX_CONFIG_BYTES = '1000';
    try {
      expect(() => readJson(big)).toThrow(/over the config file limit of 1000 bytes \(raise it with VLM_MAX_CONFIG_BYTES\)/);
    } finally {
      delete process.env.VLM_MAX_CONFIG_BYTES;
    }
    expect(readJson(big).a).toHaveLength(2000);
    process.env.VLM_MAX_IMAGE_BYTES = '100';
    try {
      await expect(loadImage(TINY_IMG)).rejects.toThrow(/over the image file limit of 100 bytes/);
    } finally {
      delete process.env.VLM_MAX_IMAGE_BYTES;
    }
    process.env.VLM_MAX_TEXT_BYTES = '10';
    try {
      const f = path.join(tmp, 'lines.txt');
      fs.writeFileSync(f, '"hello world"\n');
      await expect(run(tokenize, ['--model', MC, '--file', f])).rejects.toThrow(/over the text file limit of 10 bytes/);
    } finally {
      delete process.env.VLM_MAX_TEXT_BYTES;
    }
  });
});
