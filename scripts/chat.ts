import { Command, UsageError } from './cli';

export const command: Command = {
  name: 'chat',
  summary: '(not implemented yet)',
  usage: '',
  options: {},
  async run() {
    throw new UsageError('vlm chat is not implemented yet');
  },
};
