import { Command, UsageError } from './cli';

export const command: Command = {
  name: 'tokenize',
  summary: '(not implemented yet)',
  usage: '',
  options: {},
  async run() {
    throw new UsageError('vlm tokenize is not implemented yet');
  },
};
