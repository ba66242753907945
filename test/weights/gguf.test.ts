/**
 * GGUF (weights/gguf.ts) and `vlm convert` (scripts/convert.ts, weights/convert.ts): the container
 * round trip (header fields, alignment, reversed dims, every dtype), then each tiny model
 * converted with f16 and q8_0 and traced from the converted directory, byte-identical to tracing
 * the original with the same --quantize at load; copied files, --force, bad inputs (exit 2) and
 * SIGINT/SIGTERM leaving nothing behind.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command, exitCodeFor, parseCommand } from '../../scripts/cli';
import { command as convert } from '../../scripts/convert';
import { command as trace } from '../../scripts/trace';
import { GGML_TYPE, GGUF_MAGIC, GgufFile, GgmlTypeName, writeGguf } from '../../weights/gguf';
import { Checkpoint } from '../../weights/checkpoint';
import { NativeWeight, loadNativeAddon } from '../../layers/native_weight';
import { SafetensorsFile, WriteTensor, floatToHalf, writeSafetensors } from '../../weights/safetensors';
import { REPO_ROOT, fixture } from '../helpers/golden';
import { modelFixture } from '../helpers/fixtures';

const hasAddon = !!loadNativeAddon().addon;
const itAddon = hasAddon ? it : it.skip;

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vlm-gguf-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

async function run(cmd: Command, args: string[]): Promise<string> {
  const chunks: string[] = [];
  const spy = jest.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => {
    chunks.push(String(s));
    return true;
  });
  const warn = jest.spyOn(console, 'warn').mockImplementation(() => {});
  try {
    const { opts, positionals } = parseCommand(cmd, args);
    await cmd.run(opts, positionals);
  } finally {
    spy.mockRestore();
    warn.mockRestore();
  }
  return chunks.join('');
}

function rand(n: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  let s = seed;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    a[i] = (s / 2 ** 32 - 0.5) * 4;
  }
  return a;
}

describe('GGUF container', () => {
  it('writes and reads back header fields, metadata, alignment and every dtype', () => {
    const f32 = rand(3 * 5, 1);
    const f16 = Uint16Array.from(rand(4 * 6, 2), (x) => floatToHalf(x));
    const bf = Uint16Array.from(new Uint32Array(rand(2 * 3, 3).buffer), (x) => x >>> 16);
    const f64 = Float64Array.from(rand(7, 4));
    const i32 = Int32Array.from([1, -2, 3]);
    const tensors: { name: string; type: GgmlTypeName; shape: number[]; data: Uint8Array }[] = [
      { name: 'a.f32', type: 'F32', shape: [3, 5], data: new Uint8Array(f32.buffer) },
      { name: 'b.f16', type: 'F16', shape: [4, 6], data: new Uint8Array(f16.buffer) },
      { name: 'c.bf16', type: 'BF16', shape: [2, 3], data: new Uint8Array(bf.buffer) },
      { name: 'd.f64', type: 'F64', shape: [7], data: new Uint8Array(f64.buffer) },
      { name: 'e.i32', type: 'I32', shape: [3], data: new Uint8Array(i32.buffer) },
      { name: 'f.q8', type: 'Q8_0', shape: [2, 64], data: new Uint8Array(2 * 2 * 34).map((_, i) => i & 0x3f) },
      { name: 'g.q4', type: 'Q4_0', shape: [3, 32], data: new Uint8Array(3 * 18).map((_, i) => i & 0x3f) },
    ];
    const file = path.join(tmp, 't.gguf');
    writeGguf(file, {
      'general.architecture': { type: 'string', value: 'test' },
      'general.file_type': { type: 'uint32', value: 7 },
      'x.u64': { type: 'uint64', value: 2 ** 40 },
      'x.i32': { type: 'int32', value: -5 },
      'x.f32': { type: 'float32', value: 0.5 },
      'x.bool': { type: 'bool', value: true },
      'x.list': { type: 'string[]', value: ['a', 'bé'] },
    }, tensors);
    const raw = fs.readFileSync(file);
    expect(raw.readUInt32LE(0)).toBe(GGUF_MAGIC);
    expect(raw.subarray(0, 4).toString('latin1')).toBe('GGUF');
    expect(raw.readUInt32LE(4)).toBe(3);
    expect(Number(raw.readBigUInt64LE(8))).toBe(tensors.length);
    expect(Number(raw.readBigUInt64LE(16))).toBe(8); // 7 + general.alignment
    // the first tensor info: name, n_dims 2, dims reversed (ne[0] = 5 columns), type F32, offset 0
    const at = raw.indexOf(Buffer.from('a.f32')) + 5;
    expect(raw.readUInt32LE(at)).toBe(2);
    expect(Number(raw.readBigUInt64LE(at + 4))).toBe(5);
    expect(Number(raw.readBigUInt64LE(at + 12))).toBe(3);
    expect(raw.readUInt32LE(at + 20)).toBe(GGML_TYPE.F32);
    expect(Number(raw.readBigUInt64LE(at + 24))).toBe(0);

    const g = GgufFile.open(file);
    try {
      expect(g.version).toBe(3);
      expect(g.alignment).toBe(32);
      expect(g.dataStart % 32).toBe(0);
      expect(g.metadata.get('general.alignment')).toBe(32);
      expect(g.metadata.get('general.architecture')).toBe('test');
      expect(g.metadata.get('x.u64')).toBe(2 ** 40);
      expect(g.metadata.get('x.i32')).toBe(-5);
      expect(g.metadata.get('x.f32')).toBe(0.5);
      expect(g.metadata.get('x.bool')).toBe(true);
      expect(g.metadata.get('x.list')).toEqual(['a', 'bé']);
      expect(g.keys()).toEqual(tensors.map((t) => t.name));
      for (const t of tensors) {
        const e = g.entry(t.name);
        expect(e.shape).toEqual(t.shape);
        expect(e.dtype).toBe(t.type);
        expect(e.begin % 32).toBe(0);
        expect(new Uint8Array(g.readBytes(t.name))).toEqual(t.data);
      }
      expect(g.read('a.f32').data).toEqual(f32);
      expect(g.readRows('a.f32', 1, 3).data).toEqual(f32.subarray(5, 15));
      expect(g.read('d.f64').data).toEqual(Float32Array.from(f64));
      expect(g.read('e.i32').data).toEqual(i32);
      expect(g.read('c.bf16').data).toEqual(Float32Array.from(bf, (x) => new Float32Array(new Uint32Array([x << 16]).buffer)[0]));
    } finally {
      g.close();
    }
    expect(raw.length).toBe(GgufFile.open(file).entry('g.q4').end);
  });

  itAddon('q8_0 / q4_0 tensors read back as the native dequantization, and map zero-copy', () => {
    const x = rand(4 * 64, 9);
    const tensors = (['q8_0', 'q4_0'] as const).map((t) => {
      const w = NativeWeight.quantize(x, t, [4, 64]);
      const data = w.readBytes(new Uint8Array(w.bytes));
      const deq = w.toFloat32();
      w.dispose();
      return { name: t, type: t.toUpperCase() as GgmlTypeName, shape: [4, 64], data, deq };
    });
    const file = path.join(tmp, 'q.gguf');
    writeGguf(file, {}, tensors);
    const ck = Checkpoint.open(file);
    try {
      for (const t of tensors) {
        expect(ck.read(t.name).data).toEqual(t.deq);
        expect(ck.readRows(t.name, 1, 3).data).toEqual(t.deq.subarray(64, 192));
        const e = ck.entry(t.name);
        const m = NativeWeight.fromMap(NativeWeight.mapFile(file), e.begin, t.name, 4, 64);
        expect(m.toFloat32()).toEqual(t.deq);
        m.dispose();
      }
    } finally {
      ck.close();
    }
  });

  it('refuses a file that is not GGUF or is truncated, naming it', () => {
    const bad = path.join(tmp, 'bad.gguf');
    fs.writeFileSync(bad, 'GGML....');
    expect(() => GgufFile.open(bad)).toThrow(/bad\.gguf: not a GGUF file/);
    const good = path.join(tmp, 't.gguf');
    const trunc = path.join(tmp, 'trunc.gguf');
    fs.writeFileSync(trunc, fs.readFileSync(good).subarray(0, fs.statSync(good).size - 10));
    expect(() => GgufFile.open(trunc)).toThrow(/trunc\.gguf: truncated: tensor 'g\.q4'/);
  });
});

const CASES: { name: string; image: string }[] = [
  { name: 'minicpmv26_tiny', image: fixture('preprocess', 'minicpmv26_tiny', 'input_image.png') },
  { name: 'videollama2_clip_mistral_tiny', image: 'input_image.png' },
  { name: 'videollama2_siglip_qwen2_tiny', image: 'input_image.png' },
];

const describeAddon = hasAddon ? describe : describe.skip;

describeAddon('vlm convert → load the converted directory', () => {
  for (const c of CASES) {
    const model = modelFixture(c.name);
    if (!model) continue;
    const image = path.isAbsolute(c.image) ? c.image : path.join(model, c.image);
    for (const q of ['f16', 'q8_0'] as const) {
      it(`${c.name} --quantize ${q}: traces identical to loading the original with --quantize ${q}; files copied`, async () => {
        const out = path.join(tmp, `${c.name}-${q}`);
        const t0 = process.hrtime.bigint();
        const msg = await run(convert, ['--model', model, '--out', out, '--quantize', q]);
        const ms = Number(process.hrtime.bigint() - t0) / 1e6;
        expect(msg).toMatch(/wrote .*model\.gguf/);
        process.stderr.write(`convert ${c.name} ${q}: ${ms.toFixed(0)} ms, ${(fs.statSync(path.join(out, 'model.gguf')).size / 1e6).toFixed(2)} MB, rss ${(process.memoryUsage().rss / 1e6).toFixed(0)} MB\n`);

        // every non-weight file copied byte for byte; no safetensors
        const list = (d: string, rel = ''): string[] => fs.readdirSync(d).sort().flatMap((n) => fs.statSync(path.join(d, n)).isDirectory() ? list(path.join(d, n), path.join(rel, n)) : [path.join(rel, n)]);
        const want = list(model).filter((f) => !f.endsWith('.safetensors') && !f.endsWith('model.safetensors.index.json'));
        expect(list(out)).toEqual([...want, 'model.gguf'].sort());
        for (const f of want) expect(fs.readFileSync(path.join(out, f)).equals(fs.readFileSync(path.join(model, f)))).toBe(true);

        const g = GgufFile.open(path.join(out, 'model.gguf'));
        try {
          const cfg = fs.readFileSync(path.join(model, 'config.json'), 'utf8');
          expect(g.string('tfjs_vlm.config_json')).toBe(cfg);
          expect(g.string('general.architecture')).toBe(JSON.parse(cfg).model_type);
          expect(g.string('tfjs_vlm.quantize')).toBe(q);
          expect(g.metadata.get('general.file_type')).toBe(q === 'f16' ? 1 : 7);
          const types = new Set(g.keys().map((k) => g.entry(k).dtype));
          expect(types.has(q === 'f16' ? 'F16' : 'Q8_0')).toBe(true);
          for (const k of g.keys()) expect(g.entry(k).begin % 32).toBe(0);
        } finally {
          g.close();
        }

        const a = path.join(tmp, `${c.name}-${q}-orig.safetensors`), b = path.join(tmp, `${c.name}-${q}-conv.safetensors`);
        await run(trace, ['--model', model, '--image', image, '--prompt', 'What is this?', '--quantize', q, '--out', a]);
        await run(trace, ['--model', out, '--image', image, '--prompt', 'What is this?', '--out', b]);
        expect(fs.readFileSync(b).equals(fs.readFileSync(a))).toBe(true);
        if (q === 'q8_0') {
          // a quantized GGUF is not re-quantized
          await expect(run(trace, ['--model', out, '--image', image, '--prompt', 'x', '--quantize', 'q4_0', '--out', b]))
            .rejects.toThrow(/already quantized \(q8_0.*--quantize stored/);
        }
      });
    }
  }
});

describeAddon('vlm convert: release-era VideoLLaMA 2 (tower weights in the tower directory)', () => {
  it('writes the tower tensors into model.gguf under model.vision_tower.* and traces identically', async () => {
    const src = modelFixture('videollama2_clip_mistral_tiny')!;
    const dir = path.join(tmp, 'vl2_release');
    fs.cpSync(src, dir, { recursive: true });
    const st = SafetensorsFile.open(path.join(src, 'model.safetensors'));
    const keep: Record<string, WriteTensor> = {};
    for (const k of st.keys()) if (!k.startsWith('model.vision_tower.')) keep[k] = { dtype: 'F32', shape: st.entry(k).shape, data: st.read(k).data as Float32Array };
    st.close();
    writeSafetensors(path.join(dir, 'model.safetensors'), keep);
    const out = path.join(tmp, 'vl2_release-q8');
    await run(convert, ['--model', dir, '--out', out, '--quantize', 'q8_0', '--quiet']);
    const g = GgufFile.open(path.join(out, 'model.gguf'));
    expect(g.keys().filter((k) => k.startsWith('model.vision_tower.vision_tower.vision_model.')).length).toBeGreaterThan(0);
    g.close();
    const image = path.join(src, 'input_image.png');
    const a = path.join(tmp, 'rel-a.safetensors'), b = path.join(tmp, 'rel-b.safetensors');
    await run(trace, ['--model', dir, '--image', image, '--prompt', 'What?', '--quantize', 'q8_0', '--out', a]);
    // the converted directory's tower subdirectory has no weights: they come from model.gguf
    expect(fs.readdirSync(path.join(out, 'clip-vit-tiny-patch14-84')).some((n) => n.endsWith('.safetensors'))).toBe(false);
    await run(trace, ['--model', out, '--image', image, '--prompt', 'What?', '--out', b]);
    expect(fs.readFileSync(b).equals(fs.readFileSync(a))).toBe(true);
  });
});

describe('vlm convert: arguments and outputs', () => {
  const model = modelFixture('minicpmv26_tiny')!;
  const fail = async (args: string[], re: RegExp) => {
    let err: unknown;
    try {
      await run(convert, args);
    } catch (e) {
      err = e;
    }
    expect(err).toBeDefined();
    expect((err as Error).message).toMatch(re);
    expect(exitCodeFor(err)).toBe(2);
  };

  it('bad inputs are clear errors with exit code 2', async () => {
    await fail(['--model', model, '--quantize', 'q8_0'], /--out is required/);
    await fail(['--model', model, '--out', path.join(tmp, 'x')], /--quantize is required/);
    await fail(['--model', model, '--out', path.join(tmp, 'x'), '--quantize', 'q5_k'], /--quantize: 'q5_k' is not one of f16, bf16, q8_0, q4_0, stored/);
    await fail(['--model', model, '--out', path.join(model, 'conv'), '--quantize', 'q8_0'], /lies inside the input directory/);
    await fail(['--model', model, '--out', model, '--quantize', 'q8_0'], /lies inside the input directory/);
    await fail(['--model', model, '--out', path.dirname(model), '--quantize', 'q8_0', '--force'], /contains the input directory/);
    await fail(['--model', path.join(tmp, 'nope'), '--out', path.join(tmp, 'x'), '--quantize', 'q8_0'], /--model: .*nope is not a directory/);
    await fail(['--model', model, '--out', path.join(tmp, 'no', 'such', 'dir'), '--quantize', 'q8_0'], /does not exist/);
    expect(fs.existsSync(path.join(tmp, 'x'))).toBe(false);
  });

  itAddon('an existing non-empty --out needs --force, which replaces it', async () => {
    const out = path.join(tmp, 'forced');
    fs.mkdirSync(out);
    fs.writeFileSync(path.join(out, 'old.txt'), 'old');
    await fail(['--model', model, '--out', out, '--quantize', 'q4_0'], /already exists and is not empty; pass --force/);
    expect(fs.readdirSync(out)).toEqual(['old.txt']);
    await run(convert, ['--model', model, '--out', out, '--quantize', 'q4_0', '--force', '--quiet']);
    expect(fs.existsSync(path.join(out, 'old.txt'))).toBe(false);
    expect(fs.existsSync(path.join(out, 'model.gguf'))).toBe(true);
    expect(fs.readdirSync(tmp).filter((n) => n.includes('.partial-'))).toEqual([]);
  });

  let child = '';
  beforeAll(() => {
    child = path.join(tmp, 'vlm_child.ts');
    fs.writeFileSync(child, `
      import fs from 'node:fs';
      const sig = process.env.SELF_KILL as NodeJS.Signals | undefined;
      if (sig) {
        // a signal arriving while model.gguf is being written (once it is open: its writes are whole
        // 4 MiB blocks, so a tiny model's file is written in one go at the end)
        const orig = fs.openSync;
        (fs as unknown as { openSync: typeof fs.openSync }).openSync = ((...a: Parameters<typeof fs.openSync>) => {
          const fd = (orig as (...x: unknown[]) => number)(...a);
          if (String(a[0]).endsWith('model.gguf')) process.kill(process.pid, sig);
          return fd;
        }) as typeof fs.openSync;
      }
      import(${JSON.stringify(path.join(REPO_ROOT, 'scripts', 'vlm'))}).then(({ main }) => main(process.argv.slice(2)))
        .then((rc: number) => { process.exitCode = rc; }, (e: Error) => { process.stderr.write('vlm: error: ' + e.message + '\\n'); process.exitCode = 1; });
    `);
  });

  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    itAddon(`${sig} in the middle of a conversion leaves nothing, and the process dies of ${sig}`, () => {
      const parent = fs.mkdtempSync(path.join(tmp, 'sig-'));
      const r = spawnSync(process.execPath, ['--import', 'tsx', child, 'convert', '--model', model, '--out', path.join(parent, 'out'), '--quantize', 'q8_0', '--quiet'],
        { cwd: REPO_ROOT, env: { ...process.env, SELF_KILL: sig }, timeout: 120000 });
      expect(r.signal).toBe(sig);
      expect(fs.readdirSync(parent)).toEqual([]);
    });
  }

  it('SIGINT sent right after the start leaves nothing', async () => {
    const parent = fs.mkdtempSync(path.join(tmp, 'sigstart-'));
    const p = spawn(process.execPath, ['--import', 'tsx', child, 'convert', '--model', model, '--out', path.join(parent, 'out'), '--quantize', 'q8_0', '--quiet'],
      { cwd: REPO_ROOT, stdio: 'ignore' });
    await new Promise((r) => p.once('spawn', r));
    p.kill('SIGINT');
    const [code, signal] = await new Promise<[number | null, string | null]>((r) => p.once('exit', (c, s) => r([c, s])));
    expect(signal === 'SIGINT' || code !== 0).toBe(true);
    expect(fs.readdirSync(parent)).toEqual([]);
  });
});
