/* shardlm/data.h - training data: llm.c token shards, the built-in synthetic corpus,
 * and the dataset that turns a global sample index into a (T+1)-token window.
 *
 * A sample is a pure function of its global index, so every rank count sees the same
 * sample stream. */
#ifndef SHARDLM_DATA_H
#define SHARDLM_DATA_H

#include <stddef.h>
#include <stdint.h>
#include "shardlm/status.h"

/* llm.c token shard: 256 int32 header (magic, version, token count, zeros), then
 * uint16 tokens. */
#define SLM_SHARD_MAGIC 20240520
#define SLM_SHARD_VERSION 1     /* uint16 tokens (llm.c) */
#define SLM_SHARD_VERSION_U32 2 /* uint32 tokens, for vocabularies past 65535 */
#define SLM_SHARD_HEADER_BYTES 1024

/* Write tokens (all < 65536) as one shard. Local. */
slm_status slm_shard_write(const char *path, const uint16_t *tokens, size_t n);

/* --- the synthetic corpus ----------------------------------------------------------
 * Text from a small probabilistic grammar ("the old cat sees a dog."), a sequence of
 * independent sentences whose words identify every choice made, so the text's entropy
 * rate is exactly H(sentence) / E[characters per sentence]. Characters become tokens
 * by a fixed-length code that depends only on vocab_size: bytes when vocab_size >= 128,
 * the index in the grammar's alphabet when that fits, otherwise several base-vocab
 * digits per character. The code is invertible, so samples decode back to text. */
typedef struct slm_synth_codec {
    int vocab_size;
    int digits;         /* tokens per character */
    int alphabet_size;  /* characters the grammar uses */
    char alphabet[64];  /* those characters, in token order (when digits/compact) */
    int bytes;          /* 1: token = ASCII code */
} slm_synth_codec;

void slm_synth_codec_init(slm_synth_codec *codec, int vocab_size);
/* Entropy rate of the grammar's text in nats per character. */
double slm_synth_entropy_per_char(void);
/* Generate at least nchars characters of text (whole sentences) from stream key; the
 * result is malloc'ed and NUL-terminated, *len receives its length. */
char *slm_synth_text(uint64_t key, size_t nchars, size_t *len);
/* Encode text into tokens (digits per char each); returns tokens written or -1 if a
 * character is outside the codec. */
long slm_synth_encode(const slm_synth_codec *codec, const char *text, size_t n, int32_t *out,
                      size_t cap);
/* Decode tokens into text (NUL-terminated, invalid tokens shown as <id>). */
void slm_synth_decode(const slm_synth_codec *codec, const int32_t *tok, size_t n, char *out,
                      size_t cap);

/* --- datasets --------------------------------------------------------------------- */
typedef struct slm_dataset *slm_dataset_t;

/* Open spec: the word `synthetic`, or a glob of llm.c shards. Every token is checked
 * against vocab_size here, once. For synthetic data at least min_tokens tokens are
 * generated from (seed, split). Local; call on every rank with the same arguments. */
slm_status slm_dataset_open(const char *spec, int vocab_size, int seq_len, uint64_t seed,
                            int split, size_t min_tokens, slm_dataset_t *ds);
void slm_dataset_destroy(slm_dataset_t *ds);
/* Number of distinct (T+1)-token windows. */
size_t slm_dataset_num_windows(slm_dataset_t ds);
size_t slm_dataset_num_tokens(slm_dataset_t ds);
/* Sample order: with shuffle on, epoch e = g / windows visits every window once in a
 * pseudorandom order keyed by (seed, e), a new order each epoch; off, in file order. */
void slm_dataset_set_shuffle(slm_dataset_t ds, int on);
/* Window for global sample index g into out (T+1). */
void slm_dataset_sample(slm_dataset_t ds, uint64_t g, int32_t *out);
/* One-line description for the log. */
const char *slm_dataset_describe(slm_dataset_t ds);
/* Entropy rate of the source in nats per token (the loss floor), or NAN if unknown. */
double slm_dataset_entropy_floor(slm_dataset_t ds);
/* Give token shards their text codec: the GPT-2 tokenizer in dir (encoder.json and
 * vocab.bpe, as data.tokenizer names it). Refuses a tokenizer with more tokens than
 * the model's vocabulary, and the synthetic corpus (it has its own code). */
slm_status slm_dataset_set_tokenizer(slm_dataset_t ds, const char *dir);
/* Decode tokens to text if the dataset knows how (synthetic, or a tokenizer was set);
 * else token ids. */
void slm_dataset_decode(slm_dataset_t ds, const int32_t *tok, size_t n, char *out, size_t cap);
/* Encode a prompt; returns tokens written, or -1 if the dataset has no text codec (or,
 * for the synthetic corpus, the text has a character outside it). */
long slm_dataset_encode(slm_dataset_t ds, const char *text, int32_t *out, size_t cap);

#endif
