import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'coverage/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      globals: { process: 'readonly', console: 'readonly', Buffer: 'readonly', setTimeout: 'readonly', clearTimeout: 'readonly', setInterval: 'readonly', clearInterval: 'readonly', setImmediate: 'readonly', URL: 'readonly', fetch: 'readonly', performance: 'readonly' },
    },
    rules: {
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
      // zod as a namespace import (or named functions): esbuild then binds z.object and the like to what
      // they name, and the bundles leave out the parts of zod cqp does not use (a fifth of a filter's bundle
      // and cache). `z` or zod's default as a value, or import('zod'), would need every part.
      'no-restricted-syntax': [
        'error',
        {
          selector: "ImportDeclaration[source.value='zod'][importKind!='type'] > :matches(ImportSpecifier[importKind!='type'][imported.name=/^(z|default)$/], ImportDefaultSpecifier)",
          message: "write import * as z from 'zod' (see eslint.config.js)",
        },
        { selector: "ImportExpression[source.value='zod']", message: 'import a module of cqp that imports from zod (see eslint.config.js)' },
      ],
    },
  },
  {
    // The bins are CommonJS (bin/package.json): Node starts them without its ES module loader.
    files: ['bin/**/*.js'],
    languageOptions: { sourceType: 'commonjs', globals: { require: 'readonly', module: 'writable', __dirname: 'readonly' } },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
);
