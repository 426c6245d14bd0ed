// bpe_ref.js - the oracle for shardlm's GPT-2 tokenizer: the gpt-3-encoder npm package.
//
//   node bpe_ref.js PKGDIR encode FILE   token ids of FILE on one line, space separated
//   node bpe_ref.js PKGDIR bench FILE    encoding speed in MB/s (cold, then warm cache)
//   node bpe_ref.js PKGDIR each FILE...  token ids of each FILE, one line per file
//
// PKGDIR is the unpacked package (Encoder.js, encoder.json, vocab.bpe). The package's
// encode() concatenates arrays once per pre-token, which is quadratic (12 s for 300 KB),
// so this script runs the package's own Encoder.js with its internals exported and
// repeats encode()'s loop with push(). On inputs up to 64 KB it also runs the shipped
// encode() and fails unless both agree, so the loop is the package's, not ours.
'use strict';
const fs = require('fs');
const path = require('path');
const vm = require('vm');

function load(dir) {
  const file = path.join(dir, 'Encoder.js');
  const src = fs.readFileSync(file, 'utf8');
  const wrapper = '(function (exports, require, module, __filename, __dirname) {' + src +
    '\nmodule.exports.internals = { bpe, pat, byte_encoder, encoder, encodeStr };\n})';
  const mod = { exports: {} };
  vm.runInThisContext(wrapper, { filename: file })(mod.exports, require, mod, file, dir);
  return mod.exports;
}

function encodeLinear(E, text) {
  const I = E.internals, out = [];
  for (const m of text.matchAll(I.pat)) {
    const token = I.encodeStr(m[0]).map(x => I.byte_encoder[x]).join('');
    for (const t of I.bpe(token).split(' ')) out.push(I.encoder[t]);
  }
  return out;
}

function readText(file) {
  // fatal: the oracle only sees valid UTF-8; ignoreBOM: keep a leading U+FEFF as text
  const dec = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
  return dec.decode(fs.readFileSync(file));
}

function encodeChecked(E, file) {
  const text = readText(file);
  const ids = encodeLinear(E, text);
  if (Buffer.byteLength(text, 'utf8') <= 65536) {
    const shipped = E.encode(text);
    if (shipped.join(' ') !== ids.join(' ')) {
      console.error(`bpe_ref.js: ${file}: the package's encode() and its loop disagree`);
      process.exit(1);
    }
  }
  if (ids.some(x => x === undefined)) {
    console.error(`bpe_ref.js: ${file}: a BPE result is not in encoder.json`);
    process.exit(1);
  }
  return ids;
}

function main() {
  const [dir, mode, file] = process.argv.slice(2);
  if (!dir || !file || !['encode', 'bench', 'each'].includes(mode)) {
    console.error('usage: node bpe_ref.js PKGDIR encode|bench|each FILE...');
    process.exit(2);
  }
  const E = load(dir);
  if (mode !== 'bench') {
    const files = mode === 'each' ? process.argv.slice(4) : [file];
    for (const f of files) process.stdout.write(encodeChecked(E, f).join(' ') + '\n');
    return;
  }
  const text = readText(file);
  const bytes = Buffer.byteLength(text, 'utf8');
  console.log(`gpt-3-encoder ${file}: ${bytes} bytes`);
  for (const pass of ['cold', 'warm']) {
    const t0 = process.hrtime.bigint();
    const n = encodeLinear(E, text).length;
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    console.log(`  encode, ${pass} cache: ${n} tokens in ${s.toFixed(3)} s: ${(bytes / 1e6 / s).toFixed(2)} MB/s`);
  }
}

main();
