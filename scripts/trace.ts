import { Command, UsageError } from './cli';

export const command: Command = {
  name: 'trace',
  summary: '(not implemented yet)',
  usage: '',
  options: {},
  async run() {
    throw new UsageError('vlm trace is not implemented yet');
  },
};
