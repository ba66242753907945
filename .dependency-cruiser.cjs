/**
 * The layering of tfjs-vlm (README "Layout"), checked by `npm run lint`:
 *
 *   io/ layers/ weights/                   lowest: file reading, tensors and modules, checkpoints
 *   tokenizers/ media/ generation/         shared services (no model knowledge)
 *   training/ bench/                       shared harnesses (trainer, bench runner)
 *   models/ (contract, pipeline, families table, registry) and models/<family>/
 *   scripts/ server/ index.ts              entry points
 *
 * No import runs from a lower layer to a higher one; shared folders never import a family folder
 * (they reach families through models/families.ts); no cycles.
 */
const FAMILY = '^models/(minicpmv|videollama2|qwen2|mistral|clip|siglip)/';
const SHARED = '^(io|layers|weights|tokenizers|media|generation|training|bench)/';
module.exports = {
  forbidden: [
    { name: 'no-circular', severity: 'error', from: {}, to: { circular: true } },
    { name: 'base-stays-low', severity: 'error', comment: 'io/, layers/ and weights/ never import the layers above them',
      from: { path: '^(io|layers|weights)/' }, to: { path: '^(models|tokenizers|media|generation|training|bench|scripts|server)/|^index\\.ts$' } },
    { name: 'layers-below-weights', severity: 'error', comment: 'layers/ never imports weights/ (weights/ builds on layers/)',
      from: { path: '^layers/' }, to: { path: '^weights/' } },
    { name: 'services-know-no-models', severity: 'error', comment: 'tokenizers/, media/, generation/ know nothing of models, training, bench or entry points',
      from: { path: '^(tokenizers|media|generation)/' }, to: { path: '^(models|training|bench|scripts|server)/|^index\\.ts$' } },
    { name: 'shared-never-imports-a-family', severity: 'error', comment: 'shared folders reach families only through models/families.ts',
      from: { path: SHARED }, to: { path: FAMILY } },
    { name: 'models-below-entry-points', severity: 'error', comment: 'models/ never imports scripts/, server/ or the package index',
      from: { path: '^(models|training|bench)/' }, to: { path: '^(scripts|server)/|^index\\.ts$' } },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(node_modules|dist|test/fixtures)/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.js', '.json'] },
  },
};
