import { Command, UsageError } from './cli';

export const command: Command = {
  name: 'bench',
  summary: '(not implemented yet)',
  usage: '',
  options: {},
  async run() {
    throw new UsageError('vlm bench is not implemented yet');
  },
};
