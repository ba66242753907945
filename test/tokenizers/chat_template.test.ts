/**
 * Chat templates of the three checkpoints' tokenizer_config.json, rendered with @huggingface/jinja,
 * against the prompts the upstream code produced (golden fixtures, see goldens.json).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ChatTemplateError, loadTokenizer, renderChatTemplate, Tokenizer } from '../../tokenizers';
import { TOK, goldens } from './vectors';

const g = goldens();

describe('MiniCPM-V 2.6 template', () => {
  let tiny: Tokenizer, train: Tokenizer;
  beforeAll(() => {
    tiny = loadTokenizer(TOK('minicpmv26_tiny'));
    train = loadTokenizer(TOK('minicpmv26_tiny_train'));
  });

  it('MiniCPMV.chat prompt: default system prompt, image tag line, generation prompt', () => {
    // MiniCPMV.chat turns the image of msgs[0] into '(<image>./</image>)' + '\n' + the question
    const msgs = [{ role: 'user', content: `(<image>./</image>)\n${g.minicpmv26_tiny.msgs[0].content}` }];
    expect(tiny.applyChatTemplate(msgs, { addGenerationPrompt: true })).toBe(g.minicpmv26_tiny.chat_prompt_after_template);
  });

  it('finetune sample (dataset.py conversation_to_ids_qwen2): multi-turn, no generation prompt', () => {
    expect(train.applyChatTemplate(g.minicpmv26_tiny_train.conversations)).toBe(g.minicpmv26_tiny_train.text_after_chat_template);
  });

  it('keeps an explicit system message', () => {
    const out = tiny.applyChatTemplate([{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi' }], { addGenerationPrompt: false });
    expect(out).toBe('<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n');
  });

  it('the real tokenizer_config.json has the same template', () => {
    const real = loadTokenizer(TOK('minicpmv26'));
    expect(real.chatTemplate).toBe(tiny.chatTemplate);
  });
});

describe('VideoLLaMA2 templates', () => {
  let mistral: Tokenizer, qwen2: Tokenizer;
  beforeAll(() => {
    mistral = loadTokenizer(TOK('mistral_v1'));
    qwen2 = loadTokenizer(TOK('videollama2_qwen2_tiny'));
  });

  it.each(['video', 'image'])('Mistral (mm_infer with the <<SYS>> system message), %s', (m) => {
    const c = g.videollama2_clip_mistral_tiny[m];
    expect(c.messages[0].role).toBe('system');
    expect(mistral.applyChatTemplate(c.messages, { addGenerationPrompt: true })).toBe(c.prompt);
  });

  it.each(['video', 'image'])('Qwen2 (no system message: the template adds the default one), %s', (m) => {
    const c = g.videollama2_siglip_qwen2_tiny[m];
    expect(qwen2.applyChatTemplate(c.messages, { addGenerationPrompt: true })).toBe(c.prompt);
  });

  it('Mistral: assistant turns end with eos_token; bos_token comes from the special tokens', () => {
    const msgs = [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello' }, { role: 'user', content: 'Bye' }];
    expect(mistral.applyChatTemplate(msgs)).toBe('<s> [INST] Hi [/INST] Hello</s> [INST] Bye [/INST]');
    // extra variables override the special tokens, as HF kwargs do
    expect(mistral.applyChatTemplate(msgs.slice(0, 1), { extra: { bos_token: '' } })).toBe(' [INST] Hi [/INST]');
  });

  it('Mistral: raise_exception surfaces as ChatTemplateError with the template message', () => {
    const bad = [{ role: 'user', content: 'a' }, { role: 'user', content: 'b' }];
    expect(() => mistral.applyChatTemplate(bad)).toThrow(ChatTemplateError);
    expect(() => mistral.applyChatTemplate(bad)).toThrow(/conversation roles must alternate user\/assistant/);
    expect(() => mistral.applyChatTemplate([{ role: 'user', content: 'x' }, { role: 'tool', content: 'y' }])).toThrow(/Only user and assistant roles are supported/);
  });
});

describe('chat template errors', () => {
  it('no chat_template: names the directory', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tok-nochat-'));
    try {
      fs.copyFileSync(TOK('mistral_v1', 'tokenizer.model'), path.join(dir, 'tokenizer.model'));
      const tok = loadTokenizer(dir);
      expect(tok.chatTemplate).toBeUndefined();
      expect(() => tok.applyChatTemplate([{ role: 'user', content: 'x' }])).toThrow(`${dir}: tokenizer_config.json has no chat_template`);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('bad messages and a template that does not parse', () => {
    const special = { additional_special_tokens: [] };
    expect(() => renderChatTemplate('{{ x }}', 'hi' as never, special)).toThrow(/messages must be an array/);
    expect(() => renderChatTemplate('{{ x }}', [{ content: 'x' } as never], special)).toThrow(/messages\[0\] must be \{role: string/);
    expect(() => renderChatTemplate('{% for m in messages %}', [], special)).toThrow(ChatTemplateError);
  });

  it('passes special tokens as strings and leaves unset ones undefined', () => {
    const t = '{{ bos_token }}|{{ eos_token }}|{{ pad_token is defined }}|{{ additional_special_tokens is defined }}';
    expect(renderChatTemplate(t, [], { bos_token: '<s>', eos_token: '</s>', additional_special_tokens: [] })).toBe('<s>|</s>|false|false');
  });
});
