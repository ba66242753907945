/** The generation package: options, processors, the loop and streamers. */
export * from './config';
export * from './generate';
export * from './logits_process';
export * from './sampling';
export * from './streamers';
export * from './beam';
