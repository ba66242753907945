/**
 * `vlm tokenize`: the stdout contract of --json (one {"ids": [...]} line per input), --file
 * parsing, --no-special-tokens, and the argument errors (UsageError -> exit code 2).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { REPO_ROOT } from '../helpers/golden';
import { UsageError } from '../../scripts/cli';
import { main } from '../../scripts/vlm';
import { loadTokenizer } from '../../tokenizers';
import { TOK } from './vectors';

const MISTRAL = TOK('mistral_v1');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tok-cli-'));
const EMPTY = path.join(tmp, 'empty');
fs.mkdirSync(EMPTY);
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Runs `vlm ...args` in-process, returning stdout. */
async function run(...args: string[]): Promise<string> {
  const chunks: string[] = [];
  const spy = jest.spyOn(process.stdout, 'write').mockImplementation((c: string | Uint8Array) => {
    chunks.push(String(c));
    return true;
  });
  try {
    expect(await main(args)).toBe(0);
  } finally {
    spy.mockRestore();
  }
  return chunks.join('');
}

function file(name: string, content: string): string {
  const f = path.join(tmp, name);
  fs.writeFileSync(f, content);
  return f;
}

describe('vlm tokenize', () => {
  it('--text --json: one {"ids"} line, BOS added for Mistral', async () => {
    expect(await run('tokenize', '--model', MISTRAL, '--text', 'Hello world', '--json')).toBe('{"ids":[1,22557,1526]}\n');
    expect(await run('tokenize', '--model', MISTRAL, '--text', 'Hello world', '--json', '--no-special-tokens')).toBe('{"ids":[22557,1526]}\n');
  });

  it('Qwen2 adds nothing by default', async () => {
    expect(await run('tokenize', '--model', TOK('videollama2_qwen2_tiny'), '--text', '<|im_start|>user', '--json')).toBe('{"ids":[1022,872]}\n');
  });

  it('--file: one JSON string per line -> one line each, in order', async () => {
    const texts = ['Hello world', 'line1\nline2', ' émoji 🦙 "quoted"', ''];
    const f = file('in.jsonl', texts.map((t) => JSON.stringify(t)).join('\n') + '\n');
    const out = await run('tokenize', '--model', MISTRAL, '--file', f, '--json');
    const tok = loadTokenizer(MISTRAL);
    expect(out).toBe(texts.map((t) => `${JSON.stringify({ ids: tok.encode(t) })}\n`).join(''));
    // CRLF and no final newline work too
    const f2 = file('crlf.jsonl', texts.map((t) => JSON.stringify(t)).join('\r\n'));
    expect(await run('tokenize', '--model', MISTRAL, '--file', f2, '--json')).toBe(out);
  });

  it('without --json prints ids and tokens for people', async () => {
    const out = await run('tokenize', '--model', MISTRAL, '--text', 'Hi');
    expect(out).toContain('[1,15359]');
    expect(out).toContain('"<s>" "▁Hi"');
  });

  it.each([
    [['--text', 'x'], /--model is required/],
    [['--model', MISTRAL], /--text or --file is required/],
    [['--model', MISTRAL, '--text', 'x', '--file', 'y'], /either --text or --file, not both/],
    [['--model', '/no/such/dir', '--text', 'x'], /--model: tokenizer directory not found: \/no\/such\/dir/],
    [['--model', EMPTY, '--text', 'x'], /--model: no tokenizer in .*empty: looked for tokenizer\.json/],
    [['--model', MISTRAL, '--file', '/no/such/file.jsonl'], /--file: cannot read \/no\/such\/file\.jsonl \(ENOENT\)/],
    [['--model', MISTRAL, '--text', 'x', '--bogus'], /Unknown option '--bogus'/],
  ])('usage error %#', async (args, re) => {
    await expect(main(['tokenize', ...(args as string[])])).rejects.toThrow(UsageError);
    await expect(main(['tokenize', ...(args as string[])])).rejects.toThrow(re as RegExp);
  });

  it('a bad --file line names the line number', async () => {
    const bad = file('bad.jsonl', '"ok"\nnot json\n');
    await expect(main(['tokenize', '--model', MISTRAL, '--file', bad, '--json'])).rejects.toThrow(/bad\.jsonl, line 2: not valid JSON/);
    const notString = file('num.jsonl', '"ok"\n"fine"\n42\n');
    await expect(main(['tokenize', '--model', MISTRAL, '--file', notString])).rejects.toThrow(/num\.jsonl, line 3: expected a JSON string, got number/);
    const blank = file('blank.jsonl', '"ok"\n\n"x"\n');
    await expect(main(['tokenize', '--model', MISTRAL, '--file', blank])).rejects.toThrow(/blank\.jsonl, line 2: not valid JSON/);
  });

  it('as a process: exact stdout with --json, exit code 2 on a usage error', () => {
    const vlm = (...args: string[]) => spawnSync(process.execPath, [path.join(REPO_ROOT, 'node_modules', 'tsx', 'dist', 'cli.mjs'), path.join(REPO_ROOT, 'scripts', 'vlm.ts'), 'tokenize', ...args], { encoding: 'utf8', cwd: REPO_ROOT });
    const ok = vlm('--model', MISTRAL, '--text', 'Hello world', '--json');
    expect(ok.status).toBe(0);
    expect(ok.stdout).toBe('{"ids":[1,22557,1526]}\n');
    const bad = vlm('--model', '/no/such/dir', '--text', 'x', '--json');
    expect(bad.status).toBe(2);
    expect(bad.stdout).toBe('');
    expect(bad.stderr).toContain('vlm: error: --model: tokenizer directory not found: /no/such/dir');
  });
});
