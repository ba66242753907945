#!/usr/bin/env node
// Runs the compiled CLI (npm install / npm ci run `prepare`, which compiles to dist/).
'use strict';
const path = require('path');
const fs = require('fs');
const entry = path.join(__dirname, '..', 'dist', 'scripts', 'vlm.js');
if (!fs.existsSync(entry)) {
  process.stderr.write(`vlm: ${entry} is missing; run 'npm run build' in ${path.join(__dirname, '..')}\n`);
  process.exit(1);
}
const { main, exitCodeFor } = require(entry);
main(process.argv.slice(2)).then(
  (rc) => { process.exitCode = rc; },
  (e) => {
    process.stderr.write(`vlm: error: ${process.env.VLM_DEBUG === '1' ? e.stack : e.message}\n`);
    process.exitCode = exitCodeFor(e);
  },
);
