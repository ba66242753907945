// ESLint (flat config) with typescript-eslint: a small rule set we defend — real bugs and
// dead code, not formatting. `npm run lint` runs it with tsc (product and tests) and
// dependency-cruiser (the layering in .dependency-cruiser.cjs).
const tseslint = require('typescript-eslint');

module.exports = tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'coverage/**', 'test/fixtures/**/*.js', 'native/**/build/**', 'server/static/**', 'bench/llamacpp/**', 'eslint.config.js', '.dependency-cruiser.cjs', 'jest.config.js'] },
  ...tseslint.configs.recommended,
  {
    rules: {
      // tfjs kernel and backend internals are untyped: `any` there is deliberate and local
      '@typescript-eslint/no-explicit-any': 'off',
      // lazy per-family loading (models/families.ts) and optional native addons use require()
      '@typescript-eslint/no-require-imports': 'off',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
      'no-constant-condition': ['error', { checkLoops: false }],
      eqeqeq: ['error', 'always', { null: 'ignore' }],
      'prefer-const': 'error',
      'no-var': 'error',
    },
  },
  {
    files: ['bin/**/*.js', 'native/**/*.js', 'scripts/**/*.js', '**/*.cjs', '**/*.mjs'],
    rules: { '@typescript-eslint/no-var-requires': 'off' },
  },
);
