/** tfjs-vlm public API. */
export { initBackend, backendInfo, describeBackend } from './layers/backend';
export type { BackendInfo, BackendOptions } from './layers/backend';
export { loadChatModel, detectFamily } from './models/registry';
export * from './models/chat';
export { MiniCPMV } from './models/minicpmv/modeling';
export { MiniCPMVChat } from './models/minicpmv/chat';
export { MiniCPMVImageProcessor } from './models/minicpmv/processing';
export { VideoLLaMA2 } from './models/videollama2/modeling';
export { VideoLLaMA2Chat } from './models/videollama2/chat';
export { ClipImageProcessor, SiglipImageProcessor, loadTowerImageProcessor } from './models/clip/image_processing';
export { Qwen2ForCausalLM } from './models/qwen2/modeling';
export { MistralForCausalLM } from './models/mistral/modeling';
export { CausalLM } from './layers/decoder';
export * as generation from './generation';

export { loadTokenizer } from './tokenizers';
export type { Tokenizer } from './tokenizers';
export { loadImage } from './media/image';
export { probeVideo, decodeFrames, streamFrames } from './media/video';
export { SafetensorsFile, writeSafetensors } from './weights/safetensors';
export { Checkpoint } from './weights/checkpoint';
export { loadWeights } from './weights/load';

// Fine-tuning: the shared trainer plus each family's training data and adapter.
import * as trainingCore from './training';
import { MiniCPMVFinetuneData, collateMiniCPMV, finetuneSliceConfig } from './models/minicpmv/train_data';
import { MiniCPMVTrainFamily } from './models/minicpmv/train';
import { VideoLLaMA2TrainData, collateVideoLLaMA2, preprocessMultimodal } from './models/videollama2/train_data';
import { VideoLLaMA2TrainFamily } from './models/videollama2/train';
export const training = {
  ...trainingCore, MiniCPMVFinetuneData, collateMiniCPMV, finetuneSliceConfig, MiniCPMVTrainFamily,
  VideoLLaMA2TrainData, collateVideoLLaMA2, preprocessMultimodal, VideoLLaMA2TrainFamily,
};
export type * as trainingTypes from './training';
export type { MiniCPMVTrainBatch, MiniCPMVTrainExample } from './models/minicpmv/train_data';
export type { VideoLLaMA2TrainBatch, VideoLLaMA2TrainExample } from './models/videollama2/train_data';
export { FAMILIES, familyRow } from './models/families';
export type { FamilyRow } from './models/families';
export type { VisionLanguageModel, ModelLoadOptions, PreparedInputs, Embedded } from './models/contract';
export { ChatPipeline } from './models/pipeline';
