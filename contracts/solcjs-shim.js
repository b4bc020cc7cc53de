#!/usr/bin/env node
// A `solc` stand-in for py-solc-x: answers `--version` and `--standard-json` with solc-js (the
// official WebAssembly build from npm), because no native solc is installable on these machines.
// Only the two modes solcx.compile_standard uses are supported; anything else exits non-zero.
'use strict';
const fs = require('fs');
const path = require('path');

function loadSolc() {
  // Resolve solc from the project's node_modules even when invoked from another directory.
  const root = path.resolve(__dirname, '..');
  return require(require.resolve('solc', { paths: [root, __dirname] }));
}

function main(argv) {
  const solc = loadSolc();
  if (argv.includes('--version')) {
    // py-solc-x parses "Version: X.Y.Z+commit..." from this output.
    process.stdout.write(`solc, the solidity compiler commandline interface\nVersion: ${solc.version()}\n`);
    return 0;
  }
  if (argv.includes('--standard-json')) {
    const allowed = argv
      .filter((a) => a.startsWith('--allow-paths='))
      .flatMap((a) => a.slice('--allow-paths='.length).split(','))
      .concat(argv.flatMap((a, i) => (a === '--allow-paths' ? argv[i + 1].split(',') : [])))
      .map((p) => path.resolve(p));
    const input = fs.readFileSync(0, 'utf8');
    const findImports = (importPath) => {
      const full = path.resolve(importPath);
      if (allowed.length && !allowed.some((dir) => full.startsWith(dir))) {
        return { error: `import outside allowed paths: ${importPath}` };
      }
      try {
        return { contents: fs.readFileSync(full, 'utf8') };
      } catch (err) {
        return { error: `cannot read ${importPath}: ${err.message}` };
      }
    };
    process.stdout.write(solc.compile(input, { import: findImports }));
    return 0;
  }
  process.stderr.write(`solcjs-shim: unsupported arguments: ${argv.join(' ')}\n`);
  return 2;
}

process.exitCode = main(process.argv.slice(2));
