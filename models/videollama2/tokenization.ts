/**
 * VideoLLaMA2 prompt tokenization: `tokenizer_multimodal_token` of DAMO-NLP-SG/VideoLLaMA2
 * `videollama2/mm_utils.py` (commit c0bb03abf6b8a6b9a8dccac006fb4db5d4d9e414), with the modal
 * placeholder ids of `videollama2/constants.py`.
 *
 * The prompt (already through the chat template, so it may start with the literal `<s>`) is split
 * at every occurrence of the modal token; each chunk is tokenized on its own with
 * add_special_tokens=False (so BOS appears only where the template wrote `<s>`, and with a
 * SentencePiece tokenizer every chunk after a placeholder starts with the dummy-prefix `▁`);
 * the chunks are joined with the negative placeholder id, which the model later replaces by the
 * vision features.
 */
import { Tokenizer } from '../../tokenizers/types';

/** `IMAGE_TOKEN_INDEX`, `VIDEO_TOKEN_INDEX`, `AUDIO_TOKEN_INDEX` (videollama2/constants.py). */
export const IMAGE_TOKEN_INDEX = -200;
export const VIDEO_TOKEN_INDEX = -201;
export const AUDIO_TOKEN_INDEX = -202;

/** `DEFAULT_IMAGE_TOKEN` / `DEFAULT_VIDEO_TOKEN` / `DEFAULT_AUDIO_TOKEN`. */
export const DEFAULT_IMAGE_TOKEN = '<image>';
export const DEFAULT_VIDEO_TOKEN = '<video>';
export const DEFAULT_AUDIO_TOKEN = '<audio>';

/** `MODAL_INDEX_MAP`: modal tag -> placeholder id. */
export const MODAL_INDEX_MAP: Readonly<Record<string, number>> = {
  [DEFAULT_IMAGE_TOKEN]: IMAGE_TOKEN_INDEX,
  [DEFAULT_VIDEO_TOKEN]: VIDEO_TOKEN_INDEX,
  [DEFAULT_AUDIO_TOKEN]: AUDIO_TOKEN_INDEX,
};

/**
 * Token ids of `prompt` with each `multimodalToken` replaced by its placeholder id
 * (-200 image, -201 video, -202 audio). A token outside `MODAL_INDEX_MAP` (e.g. '' for text-only
 * prompts) tokenizes the whole prompt without special tokens, as upstream does.
 *
 * @param multimodalToken default '<image>' (upstream's default argument).
 * @param encodeChunk how each chunk is tokenized (default: `encode(chunk, add_special_tokens=False)`).
 */
export function tokenizerMultimodalToken(
  prompt: string, tokenizer: Tokenizer, multimodalToken: string = DEFAULT_IMAGE_TOKEN,
  encodeChunk: (chunk: string) => number[] = (c) => tokenizer.encode(c, { addSpecialTokens: false }),
): number[] {
  const index = Object.prototype.hasOwnProperty.call(MODAL_INDEX_MAP, multimodalToken) ? MODAL_INDEX_MAP[multimodalToken] : undefined;
  if (index === undefined) return encodeChunk(prompt);
  const chunks = prompt.split(multimodalToken).map(encodeChunk);
  const ids: number[] = [];
  chunks.forEach((c, i) => {
    if (i > 0) ids.push(index);
    for (const id of c) ids.push(id);
  });
  return ids;
}
