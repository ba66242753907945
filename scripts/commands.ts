/** The subcommands of `vlm`, in --help order. */
import { Command } from './cli';
import { command as chat } from './chat';
import { command as trace } from './trace';
import { command as preprocess } from './preprocess';
import { command as tokenize } from './tokenize';
import { command as bench } from './bench';
import { command as finetune } from './finetune';
import { command as serve } from './serve';
import { command as merge } from './merge';
import { command as makeRandom } from './make_random';
import { command as convert } from './convert';

export const COMMANDS: Command[] = [chat, trace, preprocess, tokenize, bench, finetune, serve, convert, merge, makeRandom];
