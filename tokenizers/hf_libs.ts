/**
 * The two Hugging Face JS libraries we build on, loaded through their CommonJS builds.
 *
 * Both packages are `"type": "module"` with a `require` export (dist/*.cjs). TypeScript (module
 * node16) refuses a plain `import` of them from our CommonJS files (TS1479), so the types are
 * imported with `resolution-mode: import` and the values with `require`.
 */
import type * as JinjaModule from '@huggingface/jinja' with { 'resolution-mode': 'import' };
import type * as TokenizersModule from '@huggingface/tokenizers' with { 'resolution-mode': 'import' };

 
export const jinja = require('@huggingface/jinja') as typeof JinjaModule;
 
export const hfTokenizers = require('@huggingface/tokenizers') as typeof TokenizersModule;

export type JinjaTemplate = InstanceType<typeof jinja.Template>;
export type HfTokenizer = InstanceType<typeof hfTokenizers.Tokenizer>;
