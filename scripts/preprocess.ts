import { Command, UsageError } from './cli';

export const command: Command = {
  name: 'preprocess',
  summary: '(not implemented yet)',
  usage: '',
  options: {},
  async run() {
    throw new UsageError('vlm preprocess is not implemented yet');
  },
};
