/**
 * Chat templates: the `chat_template` of tokenizer_config.json rendered with @huggingface/jinja,
 * as transformers 4.40 `PreTrainedTokenizerBase.apply_chat_template(tokenize=False)` does
 * (src/transformers/tokenization_utils_base.py): jinja with trim_blocks + lstrip_blocks (the
 * library always sets both), variables `messages`, `add_generation_prompt` and the special tokens
 * map (`bos_token`, `eos_token`, `unk_token`, `pad_token`, ..., `additional_special_tokens`;
 * unset ones are absent), extra kwargs overriding them; `raise_exception(msg)` aborts.
 */
import { JinjaTemplate, jinja } from './hf_libs';
import { SpecialTokens } from './tokenizer_config';
import { ChatMessage, ChatTemplateOptions } from './types';

/** A template called `raise_exception(...)`, or failed to parse or render. */
export class ChatTemplateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ChatTemplateError';
  }
}

/** Compiled templates by source text (HF caches them the same way with lru_cache). */
const compiled = new Map<string, JinjaTemplate>();

function compile(source: string): JinjaTemplate {
  let t = compiled.get(source);
  if (!t) {
    try {
      t = new jinja.Template(source);
    } catch (e) {
      throw new ChatTemplateError(`chat_template does not parse: ${(e as Error).message}`);
    }
    compiled.set(source, t);
  }
  return t;
}

/**
 * Renders `template` for `messages`. `special` supplies `bos_token` etc. as strings; `where`
 * names the tokenizer in errors.
 */
export function renderChatTemplate(
  template: string | undefined,
  messages: ChatMessage[],
  special: SpecialTokens,
  opts: ChatTemplateOptions = {},
  where = 'tokenizer',
): string {
  if (template === undefined) {
    throw new ChatTemplateError(`${where}: tokenizer_config.json has no chat_template; pass the prompt text yourself or add a template`);
  }
  if (!Array.isArray(messages)) throw new ChatTemplateError(`${where}: messages must be an array of {role, content}`);
  messages.forEach((m, i) => {
    if (typeof m !== 'object' || m === null || typeof m.role !== 'string') {
      throw new ChatTemplateError(`${where}: messages[${i}] must be {role: string, content: ...}, got ${JSON.stringify(m)}`);
    }
  });
  const vars: Record<string, unknown> = {};
  // HF `special_tokens_map`: only the attributes that are set (an empty list is not)
  for (const [k, v] of Object.entries(special)) {
    if (v !== undefined && !(Array.isArray(v) && v.length === 0)) vars[k] = v;
  }
  Object.assign(vars, opts.extra ?? {});
  vars.messages = messages;
  vars.add_generation_prompt = opts.addGenerationPrompt ?? false;
  try {
    return compile(template).render(vars);
  } catch (e) {
    if (e instanceof ChatTemplateError) throw e;
    throw new ChatTemplateError(`${where}: chat_template: ${(e as Error).message}`);
  }
}
